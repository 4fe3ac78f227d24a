#!/usr/bin/env bash
# The engine, node and bag measurements of docs/RESULTS.md, in one go (dev-cpu: about 25 minutes).
# Needs the PTQ4RIS cells kept by:  ptq4ris table --out docs/results/method_table --save runs/cells --deploy ptq4ris
# (or: ptq4ris calibrate --preset calibration/W8A8.yaml --out runs/cells/ptq4ris_W8A8), the W4A8 preset:
#   ptq4ris table --methods ptq4ris@preset --bits W4A8 --out docs/results/w4a8_preset --save runs/cells
# and the W4A4 preset:             ptq4ris calibrate --preset calibration/W4A4.yaml --out runs/cells/w4a4_preset
# (docs/RESULTS.md's v2 engine figures used --calib 64, the preset's size before it moved to 128)
# OpenVINO runs each engine twice: float parts in f32, and in bf16 (the default for quantized engines on a
# CPU with AVX512-BF16; 'openvino' alone means that default).
set -euo pipefail
cd "$(dirname "$0")/.."
P=.venv/bin/ptq4ris
R=docs/results
mkdir -p runs/eng "$R"

# Engines with this version of the exporter: FP32, and PTQ4RIS at W8A8 and W4A8.
$P export --model default --fp32 --out runs/eng/fp32
$P export --quantized runs/cells/ptq4ris_W8A8 --out runs/eng/w8a8
$P export --quantized runs/cells/ptq4ris_preset_W4A8 --out runs/eng/w4a8
$P export --quantized runs/cells/w4a4_preset --out runs/eng/w4a4_exact   # DRQ-GELU and RORQ groups as integer GEMM sums

# Parity: what each engine really computes, on the 1000 test scenes the table uses, on both runtimes.
for e in w8a8 w4a8 w4a4_exact; do
  for b in onnxruntime openvino:f32 openvino:bf16; do
    $P eval --engine runs/eng/$e --backend $b --limit 1000 --json $R/engine_${e}_${b/:/_}.json
  done
done

# Integer multiply-adds, read from each runtime's optimized graph.
.venv/bin/python - <<'PY'
import functools, json
from ptq4ris_core.engine.integer_ops import layer_macs, ort_integer_share, ov_integer_share
out = {}
for e in ("w8a8", "w4a8"):
    for g in ("segmenter.onnx", "text_encoder.onnx"):
        layers = layer_macs(f"runs/eng/{e}/{g}")
        for name, fn in (("onnxruntime", ort_integer_share), ("openvino", ov_integer_share),
                         ("openvino:bf16", functools.partial(ov_integer_share, precision="bf16"))):
            r = fn(f"runs/eng/{e}/{g}", layers)
            out[f"{e}/{g}/{name}"] = {"share": r["share"], "integer_macs": r["integer_macs"], "total_macs": r["total_macs"],
                                      "float_layers": [n for n, v in r["layers"].items() if not v["integer"]]}
            print(e, g, name, round(r["share"], 4))
json.dump(out, open("docs/results/integer_share.json", "w"), indent=1)
PY

# Speed, size, memory, load time; PyTorch eager as the last row.
$P bench --engine runs/eng/fp32 --engine runs/eng/w8a8 --engine runs/eng/w4a8 --engine runs/eng/w4a4_exact \
  --backend onnxruntime,openvino:f32,openvino:bf16 \
  --torch default --runs 200 --json $R/bench.json --markdown $R/bench.md

# The node under a 30 Hz camera, 2000 frames.
.venv/bin/python benchmarks/node_throughput.py --engine runs/eng/w8a8 --frames 2000 --json $R/node_throughput.json
.venv/bin/python benchmarks/node_throughput.py --engine runs/eng/w8a8 --backend openvino:f32 --frames 2000 \
  --json $R/node_throughput_openvino_f32.json
.venv/bin/python benchmarks/node_throughput.py --engine runs/eng/w8a8 --backend onnxruntime --frames 2000 \
  --json $R/node_throughput_onnxruntime.json

# A 300-frame bag: offline, then live at the recorded rate.
$P bag make --split test --n 300 --out bags/test300 --overwrite
$P bag eval bags/test300 --engine runs/eng/w8a8 --out $R/bag_eval_w8a8 --json $R/bag_eval_w8a8.json
$P bag replay bags/test300 --engine runs/eng/w8a8 --rate 1.0 --out runs/bag_replay_w8a8 --json $R/bag_replay_w8a8.json
