"""model-index.yml and configs/{cls,det,seg}/metafile.yml (OpenMMLab's model-zoo format) against the
configs: every config but the demos has one entry, each entry's parameter count is that of the
model built from its config (full size, on the meta device), the surviving weights named are
those of the checkpoint the config names, and the FLOPs are those of the docs' tables (counting
them again takes minutes)."""
import os
import os.path as osp
import re

import pytest
import torch
import yaml
from mmengine.config import Config
from mmengine.registry import MODELS, init_default_scope

import mmfocal  # noqa: F401  registers the backbones
from mmfocal.engine.published_weights import surviving_copy

from .helpers import ROOT

FAMILIES = ('cls', 'det', 'seg')


def metafile(family: str) -> dict:
    with open(osp.join(ROOT, 'configs', family, 'metafile.yml')) as file:
        return yaml.safe_load(file)


ENTRIES = {entry['Config']: entry for family in FAMILIES for entry in metafile(family)['Models']}


def zoo_configs(family: str) -> list:
    """The configs of a family that are models of the zoo: all but the demos (demo-sized models for
    the demo data, no paper model)."""
    folder = osp.join(ROOT, 'configs', family)
    return sorted(f'configs/{family}/{name}' for name in os.listdir(folder)
                  if name.endswith('.py') and '_demo' not in name)


def load(entry: dict) -> Config:
    cfg = Config.fromfile(osp.join(ROOT, entry['Config']))
    init_default_scope(cfg.default_scope)
    return cfg


def build_on_meta(cfg: Config):
    """The full-size model, shapes only (no memory, no pretrained weights)."""
    if 'backbone' in cfg.model:
        cfg.model.backbone.init_cfg = None
    with torch.device('meta'):
        return MODELS.build(cfg.model)


def test_model_index_imports_one_metafile_per_family():
    with open(osp.join(ROOT, 'model-index.yml')) as file:
        index = yaml.safe_load(file)
    assert index['Import'] == [f'configs/{family}/metafile.yml' for family in FAMILIES]


@pytest.mark.parametrize('family', FAMILIES)
def test_every_config_has_one_entry(family):
    configs = [entry['Config'] for entry in metafile(family)['Models']]
    assert sorted(configs) == zoo_configs(family)  # none missing, none extra, none twice
    assert [entry['Name'] for entry in metafile(family)['Models']] == \
        [osp.splitext(osp.basename(config))[0] for config in configs]


@pytest.mark.parametrize('config', sorted(ENTRIES))
def test_entry_matches_the_model_its_config_builds(config):
    entry = ENTRIES[config]
    cfg = load(entry)
    # A URL is named by its file; a local path (the checkpoint another config makes) as it stands.
    checkpoint = (cfg.model.backbone.get('init_cfg') or {}).get('checkpoint', '')
    if '://' in checkpoint:
        checkpoint = osp.basename(checkpoint)
    model = build_on_meta(cfg)
    assert entry['Metadata']['Parameters'] == sum(p.numel() for p in model.parameters())
    # The weights named: the backbone's pretrained file (det/seg) or the published classifier (cls).
    metadata = entry['Metadata']
    if checkpoint:
        assert metadata['Pretrained Backbone'] == checkpoint
    published = metadata.get('Pretrained Backbone', metadata.get('Published Weights'))
    if published:
        assert metadata['Surviving Weights'] == (surviving_copy(published) or 'none known (docs/weights.md)')
    for result in entry.get('Results', []):
        assert result['Source'].startswith('paper')  # no trained model of ours yet


# The docs' names of the detectors in their size tables.
DOCS_DETECTORS = {'mask_rcnn': 'Mask R-CNN', 'retinanet': 'RetinaNet', 'cascade_mask_rcnn': 'Cascade Mask R-CNN',
                  'atss': 'ATSS', 'sparse_rcnn': 'Sparse R-CNN', 'reppoints_v2': 'RepPointsV2', 'upernet': 'UperNet'}


def documented_flops() -> dict:
    """{(detector or segmenter, size letter): GFLOPs} from the 'FLOPs (ours)' column (the fourth)
    of the size tables in docs/det_results.md and docs/seg_results.md, tools/get_flops.py's output."""
    table = {}
    for doc in ('det_results.md', 'seg_results.md'):
        with open(osp.join(ROOT, 'docs', doc)) as file:
            for line in file:
                cells = [cell.strip() for cell in line.strip().strip('|').split('|')]
                row = re.fullmatch(r'(.+) Focal-([TSB])\b.*', cells[0])
                if row and len(cells) > 3 and re.fullmatch(r'[\d.]+G', cells[3]):
                    table[row.group(1), row.group(2).lower()] = float(cells[3][:-1])
    return table


def test_flops_are_those_of_the_docs_tables():
    """FLOPs are not counted again here (tools/get_flops.py takes one to three minutes a detector
    on two cores): the Focal-T/S/B detectors and segmenters are held to the docs' tables. The
    Focal-fast detectors and segmenters and the classifiers were counted once, with
    tools/get_flops.py and mmfocal.analysis.flops.backbone_flops (one 224x224 image)."""
    documented = documented_flops()
    checked = 0
    for config, entry in ENTRIES.items():
        name = re.fullmatch(r'configs/(det|seg)/(.+)_focal_([tsb])_.*\.py', config)
        if name and (DOCS_DETECTORS[name.group(2)], name.group(3)) in documented:
            assert entry['Metadata']['FLOPs'] == round(documented[DOCS_DETECTORS[name.group(2)], name.group(3)] * 1e9)
            checked += 1
    assert checked == 27  # 24 detectors (the 1x and 3x of a model share a row) and 3 UperNets
