"""Reading and writing calibration results (YAML, JSON, URDF snippet, static-transform command)."""
