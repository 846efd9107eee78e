"""Deployment: export of the backbones and models (ONNX, torch.export), inference outside PyTorch, and
torch.compile with one graph for every input size."""
