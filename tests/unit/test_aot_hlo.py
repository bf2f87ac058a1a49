"""Collectives and loops read from compiled HLO text (elf_eqx.aot.hlo), on text written the way
the TPU and GPU compilers print it."""

from __future__ import annotations

from elf_eqx.aot import hlo

GPU_ASYNC = """HloModule jit_step, is_scheduled=true, entry_computation_layout={(f32[256,1024]{1,0})->f32[256,1024]{1,0}}

%add.clone (x.1: f32[], y.1: f32[]) -> f32[] {
  %x.1 = f32[] parameter(0)
  %y.1 = f32[] parameter(1)
  ROOT %add.1 = f32[] add(%x.1, %y.1)
}

%region_0.2 (p.1: (s32[], f32[256,1024])) -> (s32[], f32[256,1024]) {
  %p.1 = (s32[], f32[256,1024]{1,0}) parameter(0)
  %gte.1 = f32[256,1024]{1,0} get-tuple-element(%p.1), index=1
  %collective-permute-start = (f32[256,1024]{1,0}, f32[256,1024]{1,0}) collective-permute-start(%gte.1), channel_id=5, source_target_pairs={{0,1},{1,0}}
  %collective-permute-done = f32[256,1024]{1,0} collective-permute-done(%collective-permute-start)
  %i.1 = s32[] get-tuple-element(%p.1), index=0
  ROOT %t.1 = (s32[], f32[256,1024]{1,0}) tuple(%i.1, %collective-permute-done)
}

%region_1.3 (p.2: (s32[], f32[256,1024])) -> pred[] {
  %p.2 = (s32[], f32[256,1024]{1,0}) parameter(0)
  ROOT %c.1 = pred[] constant(true)
}

ENTRY %main.5 (param: f32[256,1024]) -> f32[256,1024] {
  %param = f32[256,1024]{1,0} parameter(0), sharding={devices=[4,1]<=[4]}
  %all-gather-start = (f32[256,1024]{1,0}, f32[1024,1024]{1,0}) all-gather-start(%param), channel_id=1, replica_groups=mesh['axis_0'=4] {'axis_0'}, dimensions={0}, use_global_device_ids=true
  %all-gather-done = f32[1024,1024]{1,0} all-gather-done(%all-gather-start)
  %gemm = f32[1024,1024]{1,0} custom-call(%all-gather-done, %all-gather-done), custom_call_target="__cublas$gemm"
  %reduce-scatter-start = ((f32[1024,1024]{1,0}), f32[256,1024]{1,0}) reduce-scatter-start(%gemm), channel_id=3, replica_groups=[1,4]<=[4], dimensions={0}, to_apply=%add.clone
  %reduce-scatter-done = f32[256,1024]{1,0} reduce-scatter-done(%reduce-scatter-start)
  %all-reduce = (f32[10]{0}, bf16[4,8]{1,0}) all-reduce(%x, %y), channel_id=4, replica_groups={{0,1,2,3}}, to_apply=%add.clone
  %zero = s32[] constant(0)
  %init = (s32[], f32[256,1024]{1,0}) tuple(%zero, %reduce-scatter-done)
  %while.1 = (s32[], f32[256,1024]{1,0}) while(%init), condition=%region_1.3, body=%region_0.2, backend_config={"known_trip_count":{"n":"12"},"known_init_step":{"init":"0","step":"1"}}
  ROOT %out = f32[256,1024]{1,0} get-tuple-element(%while.1), index=1
}
"""

TPU_FUSED = """HloModule jit_step, is_scheduled=true

%all-reduce-scatter (input: f32[1024,1024]) -> f32[256,1024] {
  %input = f32[1024,1024]{1,0:T(8,128)} parameter(0)
  %all-reduce.2 = f32[1024,1024]{1,0:T(8,128)} all-reduce(%input), channel_id=4, replica_groups={{0,1,2,3}}, use_global_device_ids=true, to_apply=%add.1.clone
  ROOT %dynamic-slice.3 = f32[256,1024]{1,0:T(8,128)} dynamic-slice(%all-reduce.2, %multiply.2, %constant.17), dynamic_slice_sizes={256,1024}
}

%wide.body (wide.param.2: (s32[], bf16[6,128,512])) -> (s32[], bf16[6,128,512]) {
  %wide.param.2 = (s32[]{:T(128)}, bf16[6,128,512]{2,1,0:T(8,128)(2,1)}) parameter(0)
  %slice.2 = bf16[1,128,512]{2,1,0:T(8,128)(2,1)S(1)} fusion(%wide.param.2), kind=kLoop, calls=%fused_slice
  %all-gather.2 = bf16[1,512,512]{2,1,0:T(8,128)(2,1)} all-gather(%slice.2), channel_id=1, replica_groups=mesh['axis_0'=1,'axis_1'=4,'axis_2'=1] {'axis_1'}, dimensions={1}, use_global_device_ids=true
  ROOT %t = (s32[]{:T(128)}, bf16[6,128,512]{2,1,0:T(8,128)(2,1)}) tuple(%c, %w)
}

ENTRY %main.3_spmd (param.3: f32[1024,1024]) -> f32[256,1024] {
  %param.3 = f32[1024,1024]{1,0:T(8,128)} parameter(0)
  %fusion = f32[256,1024]{1,0:T(8,128)} fusion(%param.3), kind=kCustom, calls=%all-reduce-scatter, metadata={op_name="jit(step)/transpose"}
  %while.9 = (s32[]{:T(128)}, bf16[6,128,512]{2,1,0:T(8,128)(2,1)}) while(%tuple.13), condition=%wide.cond, body=%wide.body, metadata={op_name="jit(f)/while" stack_frame_id=3}
  ROOT %r = f32[256,1024]{1,0:T(8,128)} copy(%fusion)
}
"""


def test_shapes_are_sized_by_element_type_including_tuples_and_tiled_layouts():
    assert hlo.shape_bytes("f32[64,1024]{1,0}") == 64 * 1024 * 4
    assert hlo.shape_bytes("bf16[1024,1024]{1,0:T(8,128)(2,1)}") == 1024 * 1024 * 2
    assert hlo.shape_bytes("(f32[10]{0}, bf16[4,8]{1,0})") == 40 + 64
    assert hlo.shape_bytes("pred[]") == 1 and hlo.shape_bytes("s4[16]") == 8 and hlo.shape_bytes("token[]") == 0
    assert hlo.shape_bytes("f8e4m3fn[32]") == 32 and hlo.shape_bytes("c64[2]") == 16


def test_gpu_async_pairs_count_once_with_the_full_size_and_loops_multiply_by_their_trip_count():
    found = hlo.collectives(GPU_ASYNC)
    full, shard = 1024 * 1024 * 4, 256 * 1024 * 4
    assert found["all-gather"] == {"count": 1, "bytes": full, "async_count": 1, "in_loop_count": 0,
                                   "count_per_step": 1, "bytes_per_step": full}
    assert found["reduce-scatter"]["count"] == 1 and found["reduce-scatter"]["bytes"] == full  # its input
    assert found["all-reduce"]["bytes"] == 40 + 64 and found["all-reduce"]["async_count"] == 0
    permute = found["collective-permute"]
    assert (permute["count"], permute["bytes"], permute["in_loop_count"]) == (1, shard, 1)
    assert (permute["count_per_step"], permute["bytes_per_step"]) == (12, 12 * shard)
    assert hlo.while_loops(GPU_ASYNC) == [{"name": "while.1", "body": "region_0.2", "trip_count": 12}]


def test_tpu_fused_reduce_scatter_is_one_reduce_scatter_and_unknown_trip_counts_stay_unknown():
    found = hlo.collectives(TPU_FUSED)
    assert set(found) == {"reduce-scatter", "all-gather"}
    assert found["reduce-scatter"]["count"] == 1 and found["reduce-scatter"]["bytes"] == 1024 * 1024 * 4
    gather = found["all-gather"]
    assert (gather["count"], gather["bytes"], gather["in_loop_count"]) == (1, 512 * 512 * 2, 1)
    assert gather["count_per_step"] is None and gather["bytes_per_step"] is None
    assert hlo.while_loops(TPU_FUSED) == [{"name": "while.9", "body": "wide.body", "trip_count": None}]


def test_a_program_without_collectives_has_none():
    text = "HloModule m\n\nENTRY %main (p: f32[4]) -> f32[4] {\n  %p = f32[4]{0} parameter(0)\n" \
           "  ROOT %n = f32[4]{0} negate(%p)\n}\n"
    assert hlo.collectives(text) == {} and hlo.while_loops(text) == []
