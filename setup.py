from setuptools import find_packages, setup


def read_version():
    """The version is written once, in mmfocal/version.py."""
    namespace = {}
    with open('mmfocal/version.py') as file:
        exec(file.read(), namespace)
    return namespace['__version__']


setup(
    name='mmfocal',
    version=read_version(),
    description='Focal Transformer backbone for OpenMMLab detection and segmentation',
    packages=find_packages(include=['mmfocal', 'mmfocal.*']),
    python_requires='>=3.8',
    install_requires=[
        'torch>=2.0', 'mmengine==0.10.7', 'mmcv==2.1.0', 'mmdet==3.3.0',
        'mmsegmentation==1.2.2', 'ftfy', 'regex', 'pycocotools', 'setuptools<82'
    ],
)
