"""Outputs: where finished images are kept (a local folder or an S3-compatible bucket) and how they are read."""
