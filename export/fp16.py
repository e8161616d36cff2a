"""A mixed-precision ONNX for fp16 engines (ORT CUDA/TensorRT providers, strongly typed TensorRT).

Everything runs in fp16 except what overflows or loses its meaning there, kept in fp32 by a block
list: normalisation statistics (InstanceNormalization, which carries GroupNorm), Softmax, and the
whole timestep embedding (sin/cos of t * freq needs more than fp16's 11 bits at t ~ 1000).
Inputs and outputs stay float32, so the engine boundary does not change.
"""

from __future__ import annotations

import onnx

#: Op types kept in fp32 wherever they occur.
FP32_OPS = ("InstanceNormalization", "LayerNormalization", "GroupNormalization", "Softmax", "Sin", "Cos")
#: Node-name prefixes (module scopes, see onnx_export.tidy) kept in fp32 as a whole.
FP32_SCOPES = ("embed",)


def convert(proto: onnx.ModelProto) -> onnx.ModelProto:
    from onnxruntime.transformers.float16 import convert_float_to_float16

    proto = onnx.ModelProto.FromString(proto.SerializeToString())
    del proto.graph.value_info[:]  # stale fp32 annotations would contradict the converted graph
    keep = [n.name for n in proto.graph.node if n.name.split("/")[0].split(".")[0] in FP32_SCOPES]
    converted = convert_float_to_float16(proto, keep_io_types=True, op_block_list=list(FP32_OPS),
                                         node_block_list=keep)
    topological_sort(converted.graph)  # the converter appends some Casts after their consumers
    onnx.checker.check_model(converted, full_check=True)
    return converted


def topological_sort(graph: onnx.GraphProto) -> None:
    """Reorder ``graph.node`` so every node comes after the producers of its inputs (stable)."""
    produced_by = {out: i for i, node in enumerate(graph.node) for out in node.output}
    order: list[int] = []
    state = [0] * len(graph.node)  # 0 new, 1 visiting, 2 done

    def visit(i: int) -> None:
        stack = [(i, iter(graph.node[i].input))]
        state[i] = 1
        while stack:
            j, inputs = stack[-1]
            for name in inputs:
                k = produced_by.get(name)
                if k is not None and state[k] == 0:
                    state[k] = 1
                    stack.append((k, iter(graph.node[k].input)))
                    break
            else:
                stack.pop()
                state[j] = 2
                order.append(j)

    for i in range(len(graph.node)):
        if state[i] == 0:
            visit(i)
    nodes = [graph.node[i] for i in order]
    del graph.node[:]
    graph.node.extend(nodes)


def fp32_nodes(proto: onnx.ModelProto) -> list[str]:
    """Names of the compute nodes that stayed in fp32 (for the manifest and the tests)."""
    return [n.name for n in proto.graph.node
            if n.op_type in FP32_OPS or n.name.split("/")[0].split(".")[0] in FP32_SCOPES]
