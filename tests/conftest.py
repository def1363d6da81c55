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
