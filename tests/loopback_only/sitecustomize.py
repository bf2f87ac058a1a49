"""Put on ``PYTHONPATH`` of a test's subprocess (tests/object_store.py): every Python socket
connection to an address outside 127.0.0.0/8 (or ::1) raises instead of leaving the machine, so a
client that would fall back to a real cloud endpoint or the metadata server (169.254.169.254) makes
the test fail. TensorStore's own C++ client is pointed at the emulator and at a closed loopback port
for every metadata service by the environment the same helper sets."""

from elf_eqx_loopback_guard import install  # noqa: E402  (beside this file)

install()
