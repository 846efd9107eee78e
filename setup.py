from setuptools import find_packages, setup


def read_readme():
    """PyPI's project page: README.md as it is."""
    with open('README.md', encoding='utf-8') as file:
        return file.read()


def read_version():
    """The version is written once, in mmfocal/version.py."""
    namespace = {}
    with open('mmfocal/version.py') as file:
        exec(file.read(), namespace)
    return namespace['__version__']


# The lower bounds are those of what the code calls, each with where it appeared:
# - torch 2.1: the oldest release tested (`make test-compat`: torch 2.1.2 + torchvision 0.16.2 with
#   mmcv 2.1.0 built against it, the torch of OpenMMLab's own mmcv 2.1.0 wheels). Not lower:
#   scaled_dot_product_attention's scale argument, which the attention passes, is 2.1's. Newer
#   APIs are taken where present, and on older releases replaced by the same computation or
#   refused in one line naming the release (docs/install.md lists them): the CPU flash attention op
#   with attn_mask (2.3, else the generic kernels), torch.compiler.is_compiling (2.3, else Dynamo's),
#   the torch.export-based ONNX exporter with Dim.AUTO (2.5) and size-oblivious tracing for
#   compile_for_any_size (2.8). Safe loading needs none of torch's allow-list API: checkpoints are
#   read by mmfocal's own restricted unpickler, given to torch.load as its pickle_module, on every
#   torch (mmfocal/engine/safe_load.py).
# - numpy 1.25: numpy.dtypes (the dtype classes a checkpoint may name). numpy < 2 because mmcv
#   2.1, mmdet 3.3 and mmseg 1.2 predate numpy 2.
# - mmengine 0.10.7: mmfocal replaces mmengine's checkpoint loaders and file backend by their
#   registered names and reads its HistoryBuffer pickles; written and tested against 0.10.7, and
#   mmengine's 0.x line is where those names live. It finds mmdet::/mmseg:: configs through
#   pkg_resources, which setuptools 82 removed.
# - mmcv 2.1 with its compiled ops (mmdet 3.3 and mmseg 1.2.2 accept mmcv < 2.2.0 only), mmdet
#   3.3, mmsegmentation 1.2.2 and mmpretrain 1.2.0: the configs inherit their config files by path
#   (mmdet::, mmseg::, mmpretrain::), so they hold to the releases whose files they name.
# - torchvision: mmpretrain imports it; it must be the build made with the installed torch
#   (tools/setup_env.sh installs torch 2.14.1 with torchvision 0.29.1, or 0.16.2 with 2.1.2).
# - Python 3.11: the only one the tests run on (both environments, CI): older ones are not claimed;
#   newer ones are let in untested (benchmarks/gpu_check.sh runs from a checkout on Python 3.12).
# - ninja: torch.utils.cpp_extension builds mmfocal's compiled CPU attention kernels with it.
# tools/setup_env.sh installs the versions the project is tested with (tools/constraints.txt).
setup(
    name='mmfocal',
    version=read_version(),
    description='Focal Transformer backbone for OpenMMLab classification, detection and segmentation',
    long_description=read_readme(),
    long_description_content_type='text/markdown',
    license='Apache-2.0',  # README "Licence" and NOTICE: why, and the terms of what is reproduced
    keywords='computer vision, focal transformer, object detection, semantic segmentation, image classification',
    classifiers=[
        'Development Status :: 3 - Alpha',
        'Intended Audience :: Science/Research',
        'License :: OSI Approved :: Apache Software License',
        'Operating System :: POSIX :: Linux',
        'Programming Language :: Python :: 3',
        'Programming Language :: Python :: 3.11',
        'Topic :: Scientific/Engineering :: Artificial Intelligence',
        'Topic :: Scientific/Engineering :: Image Recognition',
    ],
    packages=find_packages(include=['mmfocal', 'mmfocal.*']),
    package_data={
        # the compiled CPU attention kernels' source, built ahead of or on first use (models/layers/compiled_kernels/)
        'mmfocal.models.layers': ['csrc/*.cpp'],
        # The configs and the model index where mmengine looks for a package's own (`mmfocal::det/...`):
        # mmfocal/.mim/configs and mmfocal/.mim/model-index.yml are links to the repository's, copied
        # into a wheel as files.
        'mmfocal': ['.mim/model-index.yml', '.mim/configs/**/*.py', '.mim/configs/**/*.yml'],
    },
    python_requires='>=3.11',
    install_requires=[
        'torch>=2.1', 'numpy>=1.25,<2', 'mmengine>=0.10.7,<1.0', 'mmcv>=2.1.0,<2.2.0', 'mmdet>=3.3.0,<3.4',
        'mmsegmentation>=1.2.2,<1.3', 'mmpretrain>=1.2.0,<1.3', 'torchvision', 'ftfy', 'regex', 'pycocotools',
        'setuptools<82', 'ninja'
    ],
)
