"""CLI command groups. Each module exposes ``register(app)``; cli.py wires them in.

Heavy imports (TensorFlow, Keras, pandas) stay inside the command functions so that
``alexkit --help`` answers instantly.
"""
