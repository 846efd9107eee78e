"""Evaluate a trained detector (mmdet config), segmenter (mmseg config) or classifier (mmpretrain config).

    python tools/test.py CONFIG CHECKPOINT [--work-dir DIR] [--out PATH] [--show-dir DIR]
        [--tta] [--cfg-options KEY=VALUE ...] [--launcher none|pytorch|slurm|mpi]

The command line of mmdet's, mmseg's and mmpretrain's tools/test.py; the config's ``default_scope``
decides which library evaluates: COCO bbox/segm mAP (mmdet's CocoMetric), mIoU (mmseg's IoUMetric)
or top-1/top-5 accuracy (mmpretrain's Accuracy).

A classifier's CHECKPOINT is an mmpretrain checkpoint (tools/train.py's) or an official ImageNet
file as published (focal-tiny-is224-ws7.pth, ...: converted in memory); either loads strictly,
and the log says what was done with every tensor.

--out      detection and classification: a .pkl file of the raw predictions (mmdet's
           DumpDetResults, mmengine's DumpResults); segmentation: a directory for the predicted
           label maps as PNGs (mmseg's IoUMetric).
--show-dir one PNG per drawn prediction, named after its image, written into DIR itself
           (mmdet draws every test image, mmseg every default_hooks.visualization.interval-th;
           not for classification).
--tta      the config's tta_model/tta_pipeline (for detection, a flip TTA is made up when the
           config has none, as mmdet's own tool does; a detector with masks needs its config's
           tta_model to be DetMaskTTAModel, which keeps the masks).
"""
import argparse
import copy
import os
import os.path as osp
import warnings

from mmengine.config import ConfigDict
from mmengine.dist import is_main_process
from mmengine.model import BaseTTAModel, is_model_wrapper

import mmfocal  # noqa: F401  registers the models and the PNG visualizers (mmfocal.visualization.prediction_pngs)
from mmfocal.apis import load_config
from mmfocal.cli import (
    build_runner,
    check_dataset_paths,
    end_distributed,
    exit_on_error,
    parse_with_shared_arguments,
    prepare_cpu_distributed,
    set_work_dir,
)
from mmfocal.engine.checkpoint_files import check_checkpoint_file
from mmfocal.errors import BadArgumentError, ConfigError
from mmfocal.models.checkpoints import load_classifier_checkpoint

_PNG_VISUALIZERS = {'DetLocalVisualizer': 'DetPredictionPNGs',
                    'SegLocalVisualizer': 'SegPredictionPNGs'}


def enable_show_dir(cfg, show_dir):
    """Make the config's visualization hook write a PNG per drawn prediction into a folder.

    Args:
        cfg (Config): The config, changed in place.
        show_dir (str): --show-dir, created if not there.

    Returns:
        str: The folder, absolute.

    Raises:
        ConfigError: The config has no visualization hook.
    """
    if 'visualization' not in cfg.get('default_hooks', {}):
        raise ConfigError('--show-dir: the config has no default_hooks.visualization '
                         "(mmdet's DetVisualizationHook or mmseg's SegVisualizationHook)")
    show_dir = osp.abspath(show_dir)
    cfg.default_hooks.visualization.draw = True
    visualizer_type = cfg.visualizer.get('type')
    if visualizer_type in _PNG_VISUALIZERS:
        cfg.visualizer.type = _PNG_VISUALIZERS[visualizer_type]
        cfg.visualizer.show_dir = show_dir
    elif cfg.default_scope != 'mmdet':
        cfg.visualizer.save_dir = show_dir
    if cfg.default_scope == 'mmdet':
        # The hook only writes files when it has an output directory (absolute, so that a custom
        # visualizer's files land where asked too).
        cfg.default_hooks.visualization.test_out_dir = show_dir
    os.makedirs(show_dir, exist_ok=True)
    return show_dir


def _innermost_dataset(dataloader_cfg):
    """The dataset config a dataloader reads, inside its wrappers."""
    dataset = dataloader_cfg.dataset
    while 'dataset' in dataset:  # wrappers (RepeatDataset, ConcatDataset of one, ...)
        dataset = dataset.dataset
    return dataset


def enable_tta(cfg, config_path):
    """Wrap the config's model in its TTA model and give the test dataset the TTA pipeline.

    For detection, a flip TTA is made up where the config has none, as mmdet's own tool does.

    Args:
        cfg (Config): The config, changed in place.
        config_path (str): The config file, named in the messages.

    Raises:
        ConfigError: A detector with masks whose ``tta_model`` is not DetMaskTTAModel, or a
            segmenter or classifier config without ``tta_model`` or ``tta_pipeline``.
    """
    dataset = _innermost_dataset(cfg.test_dataloader)
    if cfg.default_scope == 'mmdet':
        predicts_masks = cfg.model.get('roi_head', {}).get('mask_head') is not None or \
            cfg.model.get('mask_head') is not None
        if predicts_masks and cfg.get('tta_model', {}).get('type') != 'DetMaskTTAModel':
            raise ConfigError(
                f"--tta: {config_path} predicts instance masks, and mmdet's DetTTAModel merges "
                "boxes only (mmdet 3.3 has no mask TTA); set tta_model=dict(type='DetMaskTTAModel', "
                '...) as configs/det/htc_plusplus_focal_l_3x.py does, or evaluate it without --tta')
        if 'tta_model' not in cfg:
            warnings.warn('no tta_model in the config: using DetTTAModel with NMS 0.5')
            cfg.tta_model = dict(type='DetTTAModel',
                                 tta_cfg=dict(nms=dict(type='nms', iou_threshold=0.5),
                                              max_per_img=100))
        if 'tta_pipeline' not in cfg:
            warnings.warn('no tta_pipeline in the config: flipping the test pipeline')
            pipeline = copy.deepcopy(dataset.pipeline)
            meta_keys = ('img_id', 'img_path', 'ori_shape', 'img_shape', 'scale_factor', 'flip',
                         'flip_direction')
            pipeline[-1] = dict(type='TestTimeAug', transforms=[
                [dict(type='RandomFlip', prob=1.), dict(type='RandomFlip', prob=0.)],
                [dict(type='PackDetInputs', meta_keys=meta_keys)],
            ])
            cfg.tta_pipeline = pipeline
    else:
        for key in ('tta_model', 'tta_pipeline'):
            if key not in cfg:
                raise ConfigError(f'--tta: {config_path} defines no {key}')
    dataset.pipeline = cfg.tta_pipeline
    if 'batch_shapes_cfg' in dataset:
        dataset.batch_shapes_cfg = None
    cfg.model = ConfigDict(**cfg.tta_model, module=cfg.model)


def _unwrapped(model):
    """The model itself, inside a distributed wrapper and a TTA model (``module`` of both)."""
    if is_model_wrapper(model):
        model = model.module
    return model.module if isinstance(model, BaseTTAModel) else model


def parse_args():
    parser = argparse.ArgumentParser(
        description='Evaluate a Focal Transformer detector (mmdet config), segmenter (mmseg config) '
        'or classifier (mmpretrain config)')
    parser.add_argument('config', help='config file (mmdet, mmseg or mmpretrain)')
    parser.add_argument('checkpoint', help='checkpoint file')
    parser.add_argument('--work-dir', help='where the log and metrics go '
                        '(default: work_dirs/<config name>)')
    parser.add_argument('--out', help='detection, classification: .pkl file for the raw predictions; '
                        'segmentation: directory for predicted label PNGs')
    parser.add_argument('--show-dir', help='directory for the visualised predictions (PNG; detection and '
                        'segmentation)')
    parser.add_argument('--tta', action='store_true', help='test-time augmentation')
    return parse_with_shared_arguments(parser)


@exit_on_error
def main():
    args = parse_args()
    check_checkpoint_file(args.checkpoint)
    cfg = load_config(args.config, args.cfg_options, args.launcher)
    set_work_dir(cfg, args.config, args.work_dir)
    check_dataset_paths(cfg, args.config, phases=('test', ))  # before anything is built
    classifier = cfg.default_scope == 'mmpretrain'
    if classifier and args.show_dir:
        raise BadArgumentError('--show-dir: classification predictions are not drawn by this tool; mmpretrain\'s '
                         'VisualizationHook does: --cfg-options default_hooks.visualization.enable=True '
                         'default_hooks.visualization.out_dir=DIR')
    if not classifier:  # the runner loads it (a classifier is loaded strictly below)
        cfg.load_from = args.checkpoint

    show_dir = enable_show_dir(cfg, args.show_dir) if args.show_dir else None
    if args.tta:
        enable_tta(cfg, args.config)
    if args.out is not None and cfg.default_scope == 'mmseg':
        cfg.test_evaluator['output_dir'] = args.out
        cfg.test_evaluator['keep_results'] = True
    if args.out is not None and cfg.default_scope != 'mmseg' and not args.out.endswith(('.pkl', '.pickle')):
        raise BadArgumentError(f'--out {args.out}: {"classification" if classifier else "detection"} predictions are '
                         'dumped to a .pkl file')

    prepare_cpu_distributed(cfg)
    runner = build_runner(cfg)
    if classifier:
        load_classifier_checkpoint(_unwrapped(runner.model), args.checkpoint)
    if args.out is not None and cfg.default_scope == 'mmdet':
        from mmdet.evaluation import DumpDetResults
        runner.test_evaluator.metrics.append(DumpDetResults(out_file_path=args.out))
    elif args.out is not None and classifier:
        from mmengine.evaluator import DumpResults
        runner.test_evaluator.metrics.append(DumpResults(out_file_path=args.out))
    metrics = runner.test()

    if is_main_process():
        print(f'\nResults of {args.checkpoint} on {args.config}:')
        for key, value in metrics.items():
            print(f'  {key}: {value}')
        if show_dir is not None:
            print(f'visualised predictions (PNG): {show_dir}')
        if args.out is not None:
            print(f'raw predictions: {osp.abspath(args.out)}')
    end_distributed()


if __name__ == '__main__':
    main()
