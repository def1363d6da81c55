import os, warnings
import pytest

warnings.filterwarnings('ignore', message='.*torch.jit.script.*')

@pytest.fixture(scope='session')
def lt_path(tmp_path_factory):
    from fastai_imbalance.datasets import digits_lt
    return digits_lt(tmp_path_factory.mktemp('data')/'lt')

@pytest.fixture(scope='session')
def ml_path(tmp_path_factory):
    from fastai_imbalance.datasets import digits_multilabel
    return digits_multilabel(tmp_path_factory.mktemp('data')/'ml')


def tiny_arch(pretrained=False, **kwargs):
    "A small convnet for fast tests through `vision_learner` (body: three conv layers with BatchNorm; fastai adds the head)"
    from torch import nn
    from fastai.layers import ConvLayer
    return nn.Sequential(ConvLayer(3, 16, stride=2), ConvLayer(16, 32, stride=2), ConvLayer(32, 64, stride=2), nn.AdaptiveAvgPool2d(1))


def pytest_configure(config):
    config.addinivalue_line('markers', 'slow: long statistical runs (still run in CI; deselect with -m "not slow")')
