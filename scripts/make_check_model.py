"""Regenerates the agent's embedded check model (y = 2*x + 1, float32 [1, 4]).

Run with TensorFlow installed: python scripts/make_check_model.py; it rewrites the
CHECK_MODEL_B64 line of edgekd/agent/edgekd_agent.py.
"""

import base64
import re
from pathlib import Path

import tensorflow as tf


@tf.function(input_signature=[tf.TensorSpec([1, 4], tf.float32, name="x")])
def affine(x):
    return {"y": x * 2.0 + 1.0}


converter = tf.lite.TFLiteConverter.from_concrete_functions([affine.get_concrete_function()], None)
model = converter.convert()
agent = Path(__file__).resolve().parent.parent / "edgekd" / "agent" / "edgekd_agent.py"
text = agent.read_text()
encoded = base64.b64encode(model).decode()
text = re.sub(r'^CHECK_MODEL_B64 = ".*"$', f'CHECK_MODEL_B64 = "{encoded}"', text, flags=re.M)
agent.write_text(text)
print(f"check model: {len(model)} bytes")
