"""Build the benchmark models: standard architectures with random weights.

MobileNetV2, ResNet50 and DenseNet121 from `keras.applications(weights=None)`
(no download), converted to float32 TFLite with a dynamic batch dimension;
and null224, the same 224x224x3 input and 1000-class output with almost no
compute (global average pooling, one small dense layer): through SeSeMI it
measures everything the protocol costs on those bytes except the model.
Runs in the tools environment; the outputs are cached, never committed:

    .venv-tools/bin/python tools/make_bench_models.py [--out-dir DIR]

Default DIR: $SESEMI_BENCH_MODELS or ~/.cache/sesemi/bench-models.
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

from tflite_export import to_tflite

ARCHS = {
    "mobilenetv2": "MobileNetV2",
    "resnet50": "ResNet50",
    "densenet121": "DenseNet121",
    "null224": None,
}


def default_dir() -> Path:
    return Path(os.environ.get("SESEMI_BENCH_MODELS") or Path.home() / ".cache" / "sesemi" / "bench-models")


def build(name: str, out: Path) -> None:
    import tensorflow as tf

    tf.keras.utils.set_random_seed(0)
    if ARCHS[name] is None:
        model = tf.keras.Sequential([tf.keras.Input((224, 224, 3)), tf.keras.layers.GlobalAveragePooling2D(),
                                     tf.keras.layers.Dense(1000, activation="softmax")])
    else:
        model = getattr(tf.keras.applications, ARCHS[name])(weights=None, input_shape=(224, 224, 3))
    tflite = to_tflite(model, (224, 224, 3))
    tmp = out.with_suffix(".tmp")
    tmp.write_bytes(tflite)
    tmp.replace(out)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--out-dir", type=Path, default=default_dir())
    ap.add_argument("models", nargs="*", default=list(ARCHS))
    args = ap.parse_args()
    args.out_dir.mkdir(parents=True, exist_ok=True)
    for name in args.models:
        out = args.out_dir / f"{name}.tflite"
        if out.exists():
            print(f"[cached] {out}", flush=True)
            continue
        t0 = time.time()
        print(f"[build] {name} ...", flush=True)
        build(name, out)
        print(f"[built] {out} ({out.stat().st_size / 1e6:.1f} MB, {time.time() - t0:.0f}s)", flush=True)


if __name__ == "__main__":
    main()
