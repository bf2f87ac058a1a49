"""The reference release: task table, file layout, checkpoint readers, parameter-name map, and every model source."""
