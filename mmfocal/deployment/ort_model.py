"""ONNX Runtime inference for files of :mod:`mmfocal.deployment.export`, and putting such a file
in place of the part of an mmdet / mmseg model it was exported from, so that the library's own
pre- and post-processing (and its metrics) run around it."""
import json
from typing import Sequence

import torch
import torch.nn as nn

from .export import INPUT_NAME, METADATA_PART, METADATA_STRUCTURE, PARTS, unflatten_outputs


class ORTModel:
    """One ONNX Runtime session over an exported file.

    ``model(inputs)`` takes an NCHW float tensor and returns the part's outputs as torch
    tensors, on the input's device, nested as the PyTorch part returns them.

    Args:
        onnx_file (str): A file written by :func:`mmfocal.deployment.export.export_onnx`
            (its metadata says which part it holds).
        providers (Sequence[str]): ONNX Runtime's execution providers.
            Defaults to ``('CPUExecutionProvider', )``.
        num_threads (int): ONNX Runtime's intra-op threads; 0: its default. Defaults to 0.

    Raises:
        ValueError: The file has no mmfocal metadata.
    """

    def __init__(self, onnx_file: str, providers: Sequence[str] = ('CPUExecutionProvider', ),
                 num_threads: int = 0):
        import onnxruntime
        options = onnxruntime.SessionOptions()
        options.intra_op_num_threads = num_threads  # 0: ONNX Runtime's default
        self.session = onnxruntime.InferenceSession(onnx_file, options, providers=list(providers))
        self.onnx_file = onnx_file
        metadata = self.session.get_modelmeta().custom_metadata_map
        if METADATA_PART not in metadata:
            raise ValueError(f'{onnx_file} was not written by tools/deployment/pytorch2onnx.py '
                             f'(no {METADATA_PART} metadata): cannot tell which part it holds')
        self.part = metadata[METADATA_PART]
        self.structure = json.loads(metadata[METADATA_STRUCTURE])
        self.input_shape = self.session.get_inputs()[0].shape  # ints, or names of dynamic axes

    def check_input(self, inputs: torch.Tensor) -> None:
        """Raise ValueError, naming the file's input shape, for an input it cannot take."""
        expected = self.input_shape
        fixed = [(i, d) for i, d in enumerate(expected) if isinstance(d, int)]
        if inputs.dim() != len(expected) or any(inputs.shape[i] != d for i, d in fixed):
            raise ValueError(
                f'{self.onnx_file} takes inputs of shape {expected}, got {tuple(inputs.shape)}; '
                'export with --dynamic for a file that serves every batch and image size')

    def __call__(self, inputs: torch.Tensor):
        self.check_input(inputs)
        array = inputs.detach().to('cpu', torch.float32).contiguous().numpy()
        outputs = self.session.run(None, {INPUT_NAME: array})
        return unflatten_outputs([torch.from_numpy(o).to(inputs.device) for o in outputs], self.structure)


def _unwrap(model: nn.Module) -> nn.Module:
    return model.module if hasattr(model, 'module') and isinstance(model.module, nn.Module) else model


def _head(model: nn.Module) -> nn.Module:
    for name in ('bbox_head', 'decode_head'):
        if hasattr(model, name):
            return getattr(model, name)
    raise ValueError(f'{type(model).__name__} has neither a bbox_head nor a decode_head')


def run_part_with_onnxruntime(model: nn.Module, ort_model: ORTModel) -> nn.Module:
    """Make a model compute the part an ONNX file holds with ONNX Runtime.

    The rest (data preprocessing, RPN and RoI heads, post-processing) stays in PyTorch. The
    PyTorch modules stay in place (their weights still load); only what their forward computes is
    replaced: ``backbone``: the backbone's forward; ``features``: ``extract_feat``; ``model``:
    ``extract_feat`` gives the head's raw outputs and the head's forward passes them on, so the
    head's ``predict`` post-processes the ONNX Runtime outputs.

    Args:
        model (nn.Module): The mmdet or mmseg model the file was exported from (or a wrapper
            with ``.module``).
        ort_model (ORTModel): The session over the file.

    Returns:
        nn.Module: ``model`` (unwrapped), changed in place.
    """
    model = _unwrap(model)
    if ort_model.part not in PARTS:
        raise ValueError(f'{ort_model.onnx_file} holds an unknown part {ort_model.part!r}')
    # Plain functions as instance attributes shadow the methods (nn.Module keeps them in __dict__).
    if ort_model.part == 'backbone':
        model.backbone.forward = ort_model
    elif ort_model.part == 'features':
        model.extract_feat = ort_model
    else:
        model.extract_feat = ort_model
        _head(model).forward = _pass_through
    return model


def _pass_through(outputs):
    return outputs
