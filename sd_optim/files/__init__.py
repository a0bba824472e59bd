"""Files on disk: safe paths and names (paths), the input models and their checks (inputs), reading safetensors into owned memory (tensor_files)."""
