"""HTTP resources: parse, validate, call one service function, shape the envelope."""
