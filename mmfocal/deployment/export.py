"""Export of a config's model, or a part of it, to ONNX.

Parts (``PARTS``):

- ``backbone``: ``model.backbone(inputs)``, the multi-scale maps;
- ``features``: ``model.extract_feat(inputs)``, backbone and neck (what a two-stage detector's RoI
  heads read: their inputs come from RPN post-processing, NMS and top-k, so they stay in PyTorch);
- ``model``: ``model(inputs, mode='tensor')``, the raw tensor outputs of a one-stage detector's
  head (classification scores and box regressions per level) or a segmenter's logits.

The file records which part it holds and how its flat outputs nest (ONNX metadata), so
:mod:`mmfocal.deployment.ort_model` can put it back in place of that part. The model comes from
:func:`mmfocal.apis.build_model_from_config`.
"""
import inspect
import json
from typing import List, Optional, Sequence, Tuple

import torch
import torch.nn as nn

from ..errors import BadArgumentError
from .standard_ops import adaptive_pools_as_matmuls

PARTS = ('backbone', 'features', 'model')
INPUT_NAME = 'inputs'
DEFAULT_OPSET = 17  # the TorchScript exporter's; the torch.export-based one needs >= 18
DYNAMO_MIN_OPSET = 18
METADATA_PART, METADATA_STRUCTURE = 'mmfocal.part', 'mmfocal.structure'


def _is_two_stage(model: nn.Module) -> bool:
    return hasattr(model, 'rpn_head') or hasattr(model, 'roi_head')


class ExportedPart(nn.Module):
    """A part of a model as a module of one image-batch tensor, for the exporters.

    Args:
        model (nn.Module): An mmdet or mmseg model.
        part (str): One of :data:`PARTS` (the module docstring says what each computes).

    Raises:
        ValueError: An unknown part, ``'model'`` of a two-stage detector, or ``'features'`` of a
            model without ``extract_feat``.
    """

    def __init__(self, model: nn.Module, part: str):
        super().__init__()
        if part not in PARTS:
            raise ValueError(f'part must be one of {PARTS}, got {part!r}')
        if part == 'model' and _is_two_stage(model):
            raise ValueError(
                f'--part model: {type(model).__name__} is a two-stage detector; its RoI heads take '
                'proposals from the RPN\'s post-processing (NMS, top-k), which has no standard-ONNX '
                'form. Export --part features (backbone and neck) and run the heads in PyTorch, as '
                'tools/deployment/onnx_test.py does.')
        if part == 'features' and not hasattr(model, 'extract_feat'):
            raise ValueError(f'--part features: {type(model).__name__} has no extract_feat')
        self.model, self.part = model, part

    def forward(self, inputs: torch.Tensor):
        """The part's outputs for a batch of images.

        Args:
            inputs (torch.Tensor): Preprocessed images, (B, 3, H, W).

        Returns:
            tuple | object: The backbone's or the neck's feature maps, each (B, C_i, H_i, W_i), or
            what ``model(inputs, mode='tensor')`` returns.
        """
        if self.part == 'backbone':
            return tuple(self.model.backbone(inputs))
        if self.part == 'features':
            return tuple(self.model.extract_feat(inputs))
        return self.model._forward(inputs)  # what model(inputs, mode='tensor') returns


def flatten_outputs(outputs) -> Tuple[List[torch.Tensor], object]:
    """Nested tuples and lists of tensors as one flat list.

    Args:
        outputs (torch.Tensor | tuple | list): A tensor, or tuples and lists of them, nested.

    Returns:
        tuple[list[torch.Tensor], object]: The tensors in order, and the structure: None for a
        tensor, else the list of its items' structures.
    """
    if isinstance(outputs, torch.Tensor):
        return [outputs], None
    if not isinstance(outputs, (tuple, list)):
        raise TypeError(f'cannot export an output of type {type(outputs).__name__}')
    flat, structure = [], []
    for item in outputs:
        item_flat, item_structure = flatten_outputs(item)
        flat += item_flat
        structure.append(item_structure)
    return flat, structure


def unflatten_outputs(flat: Sequence, structure):
    """The inverse of :func:`flatten_outputs`.

    Args:
        flat (Sequence): The items, in order.
        structure (object): The structure :func:`flatten_outputs` returned.

    Returns:
        object: The items nested in tuples as ``structure`` says.
    """
    items = iter(flat)

    def build(node):
        """One node of the structure, its leaves taken from the flat items in order.

        Args:
            node (tuple | None): A tuple of child nodes, or None for one item.

        Returns:
            object: The item, or a tuple of the children built.
        """
        return next(items) if node is None else tuple(build(child) for child in node)

    return build(structure)


def output_names(structure, prefix: str = 'out') -> List[str]:
    """The ONNX output names of a structure of :func:`flatten_outputs`, the nesting in the name.

    Args:
        structure (object): The outputs' structure.
        prefix (str): The names' start. Defaults to ``'out'``.

    Returns:
        list[str]: ``out`` for a single tensor, else ``out_0``, ``out_1_3``, ...
    """
    if structure is None:
        return [prefix]
    return [name for i, child in enumerate(structure) for name in output_names(child, f'{prefix}_{i}')]


def refuse_dynamic_focal_fast(module: nn.Module) -> None:
    """Raise ValueError, naming the fix, where ``module`` holds a Focal-fast attention.

    A dynamic graph of Focal-fast would be wrong at every other size: its nearest-token key sets
    come from torch.topk over the map's distances, computed per map size in Python, so the graph
    would carry the export size's sets as constants.
    """
    from ..models.layers.focal_fast_attention import FocalFastAttention
    if any(isinstance(m, FocalFastAttention) for m in module.modules()):
        raise ValueError('FocalFastTransformer exports at a fixed input size only: its nearest-token key '
                         'sets are computed per map size outside the graph, so a dynamic graph would '
                         'apply the export size\'s key sets to every size. Export without --dynamic, '
                         'with --shape H W (and --batch N) of the size you will run.')


def torchscript_exporter_options() -> dict:
    """The options that make ``torch.onnx.export`` take the TorchScript exporter.

    Returns:
        dict: ``dynamo=False`` where it has that switch (torch >= 2.5; the torch.export-based
        exporter is the default from 2.9), none before (it is the only exporter there).
    """
    return dict(dynamo=False) if 'dynamo' in inspect.signature(torch.onnx.export).parameters else {}


def dynamo_exporter_problem(dynamic: bool) -> Optional[str]:
    """Why this torch cannot run the torch.export-based exporter as :func:`export_onnx` calls it,
    in one line, or None where it can."""
    missing = []
    if 'dynamo' not in inspect.signature(torch.onnx.export).parameters:
        missing.append('torch.onnx.export(dynamo=True)')
    if dynamic and not hasattr(getattr(torch.export, 'Dim', None), 'AUTO'):
        missing.append('torch.export.Dim.AUTO')
    if not missing:
        return None
    return (f'the torch.export-based ONNX exporter (--dynamo) needs {" and ".join(missing)} (torch >= 2.5); '
            f'torch {torch.__version__} has the TorchScript exporter only: export without --dynamo')


def export_onnx(module: nn.Module, example: torch.Tensor, out: str, dynamic: bool = False,
                opset: Optional[int] = None, dynamo: bool = False, part: str = 'model') -> List[Tuple[str, list]]:
    """Export a module of one tensor to an ONNX file.

    Args:
        module (nn.Module): The module (set to eval mode); one tensor in, tensors (nested in
            tuples or lists) out.
        example (torch.Tensor): The input it is traced at, shape (N, C, H, W).
        out (str): The ONNX file to write.
        dynamic (bool): Batch, height and width are dynamic axes, so one file serves every input
            size (refused for Focal-fast). Defaults to False.
        opset (int, optional): The ONNX opset. Defaults to None: 17 for the TorchScript
            exporter, 18 for the torch.export-based one.
        dynamo (bool): The torch.export-based exporter (opset >= 18) instead of the TorchScript
            tracer. Defaults to False.
        part (str): What the module is of its model (``'backbone'``, ``'features'`` or
            ``'model'``), kept in the file's metadata for :class:`~.ort_model.ORTModel`.
            Defaults to ``'model'``.

    Returns:
        list[tuple[str, list]]: Each output's name and shape (symbolic dimensions as strings).

    Raises:
        ValueError: A dynamic export of Focal-fast, or an opset below the exporter's least.
        BadArgumentError: ``dynamo`` on a torch without that exporter.
    """
    import onnx
    module = module.eval()
    if dynamic:
        refuse_dynamic_focal_fast(module)
    opset = opset or (DYNAMO_MIN_OPSET if dynamo else DEFAULT_OPSET)
    if dynamo and opset < DYNAMO_MIN_OPSET:
        raise ValueError(f'the torch.export-based exporter needs opset >= {DYNAMO_MIN_OPSET}, got {opset}')
    if dynamo and dynamo_exporter_problem(dynamic):
        raise BadArgumentError(dynamo_exporter_problem(dynamic))
    with torch.no_grad():
        flat, structure = flatten_outputs(module(example))
    names = output_names(structure)
    if dynamo:
        export_example = example
        dynamic_shapes = None
        if dynamic:
            auto = torch.export.Dim.AUTO
            dynamic_shapes = ({0: auto, 2: auto, 3: auto}, )
            # torch.export fixes every size that is 1 in the example: trace a batch of two.
            if example.shape[0] == 1:
                export_example = example.expand(2, *example.shape[1:]).contiguous()
        torch.onnx.export(module, (export_example, ), out, dynamo=True, opset_version=opset,
                          input_names=[INPUT_NAME], output_names=names, dynamic_shapes=dynamic_shapes,
                          report=False, verbose=False)
    else:
        dynamic_axes = None
        if dynamic:
            dynamic_axes = {INPUT_NAME: {0: 'batch', 2: 'height', 3: 'width'}}
            dynamic_axes.update({name: {0: 'batch'} for name in names})
        # Adaptive average pooling (UperNet's pyramid pooling) as matrix products built from the
        # traced size: the exporter's own form is a fixed AveragePool, only where the sizes divide.
        with adaptive_pools_as_matmuls(module):
            torch.onnx.export(module, (example, ), out, opset_version=opset, input_names=[INPUT_NAME],
                              output_names=names, dynamic_axes=dynamic_axes, **torchscript_exporter_options())
    model = onnx.load(out)
    for key, value in ((METADATA_PART, part), (METADATA_STRUCTURE, json.dumps(structure))):
        entry = model.metadata_props.add()
        entry.key, entry.value = key, value
    onnx.save(model, out)
    return [(output.name, [d.dim_param or d.dim_value for d in output.type.tensor_type.shape.dim])
            for output in model.graph.output]
