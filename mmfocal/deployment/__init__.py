"""Deployment: export of the backbones and models (ONNX, torch.export) and inference outside PyTorch."""
