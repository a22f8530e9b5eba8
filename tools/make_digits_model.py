"""Train a small CNN on scikit-learn's bundled digits and convert it to TFLite.

Runs in the tools environment (tensorflow-cpu), never at run time:

    python3 -m venv .venv-tools && .venv-tools/bin/pip install -r tools/requirements-tools.txt
    .venv-tools/bin/python tools/make_digits_model.py --out-dir models/digits

Writes digits.tflite (float32, dynamic batch, input "image" [-1,8,8,1],
output "probabilities" [-1,10]) and digits_heldout.npz (x, y) for the
held-out 20% split. The data set ships with scikit-learn: no download.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
from tflite_export import to_tflite


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--out-dir", default="models/digits")
    ap.add_argument("--epochs", type=int, default=40)
    args = ap.parse_args()
    out = Path(args.out_dir)
    out.mkdir(parents=True, exist_ok=True)

    import tensorflow as tf
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    tf.keras.utils.set_random_seed(0)
    digits = load_digits()
    x = (digits.images / 16.0).astype(np.float32)[..., None]
    y = digits.target.astype(np.int64)
    x_tr, x_te, y_tr, y_te = train_test_split(x, y, test_size=0.2, random_state=0, stratify=y)
    print(f"train {len(x_tr)}, held-out {len(x_te)}")

    model = tf.keras.Sequential([
        tf.keras.Input(shape=(8, 8, 1)),
        tf.keras.layers.Conv2D(16, 3, activation="relu", padding="same"),
        tf.keras.layers.Conv2D(32, 3, activation="relu"),
        tf.keras.layers.Flatten(),
        tf.keras.layers.Dense(64, activation="relu"),
        tf.keras.layers.Dense(10, activation="softmax"),
    ])
    model.compile(optimizer="adam", loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    model.fit(x_tr, y_tr, epochs=args.epochs, batch_size=32, verbose=2, validation_split=0.1)
    acc = float((model.predict(x_te, verbose=0).argmax(1) == y_te).mean())
    print(f"Keras held-out accuracy: {acc:.4f}")

    tflite = to_tflite(model, (8, 8, 1))
    (out / "digits.tflite").write_bytes(tflite)
    np.savez(out / "digits_heldout.npz", x=x_te, y=y_te)
    print(f"wrote {out / 'digits.tflite'} ({len(tflite)} bytes) and {out / 'digits_heldout.npz'}")


if __name__ == "__main__":
    main()
