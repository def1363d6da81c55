"Class counts, weights and priors: against fastai's own label pipeline and scikit-learn, and on bad input."
import re
from pathlib import Path
import numpy as np, pandas as pd, torch, pytest
from hypothesis import given, settings, strategies as st
from scipy import sparse
from sklearn.utils.class_weight import compute_class_weight
from fastai.data.all import (Datasets, DataBlock, TransformBlock, CategoryBlock, MultiCategoryBlock, Categorize, ColReader, ColSplitter,
                             IndexSplitter, RandomSplitter, RegexLabeller, ItemGetter, parent_label, noop)
from fastai.vision.data import ImageDataLoaders
from fastai.losses import BCEWithLogitsLossFlat
from fastai_imbalance.core import *


def naive_counts(dsets, split=0):
    "The slow reference: fastai's own pipeline over every item of the split"
    tl = dsets.subset(split).tls[dsets.n_inp]
    ys = [tl[i] for i in range(len(tl))]
    k = len(tl.vocab)
    if ys and ys[0].ndim == 1: return torch.stack(ys).sum(0).long().numpy()
    return np.bincount([int(y) for y in ys], minlength=k)


def paths(labels, root='/nowhere'): return [Path(f'{root}/{c}/{i}.png') for i,c in enumerate(labels)]

RNG = np.random.default_rng(0)
LABELS = [f'c{int(i)}' for i in RNG.zipf(1.5, 600) % 37]


def test_parent_label_matches_fastai():
    items = paths(LABELS)
    dsets = Datasets(items, [[noop], [parent_label, Categorize()]], splits=RandomSplitter(seed=1)(items))
    for split in (0, 1): np.testing.assert_array_equal(class_counts(dsets, split=split).values, naive_counts(dsets, split))


def test_fast_paths_are_taken_and_exact():
    from fastai_imbalance.core import _plain_fn, _parent_names
    from fasttransform import Transform
    assert _plain_fn(Transform(parent_label)) is parent_label  # would silently fall back to the slow route if fasttransform changed
    def typed(o: str): return o
    assert isinstance(_plain_fn(Transform(typed)), Transform)  # type dispatch must be kept
    odd = [Path('4.png'), Path('/5.png'), Path('/a/b/6.png'), Path('rel/7.png'), Path('/')]
    assert _parent_names(odd) == [parent_label(o) for o in odd]


def test_regex_lambda_and_typed_getters_match_fastai():
    items = [f'/x/{c}_{i}.jpg' for i,c in enumerate(LABELS)]
    getters = [RegexLabeller(r'/([^/_]+)_\d+\.jpg$'), lambda o: o.split('/')[-1].split('_')[0]]
    def typed(o: str): return o.split('/')[-1].split('_')[0]
    for g in getters + [typed]:
        dsets = Datasets(items, [[noop], [g, Categorize()]], splits=RandomSplitter(seed=2)(items))
        np.testing.assert_array_equal(class_counts(dsets).values, naive_counts(dsets))


def test_string_items_use_parent_label_semantics():
    # items given as un-normalised strings: must match Path(o).parent.name, not a string split
    items = ['/a//dog/1.png', '/a/cat/./2.png', 'cat/3.png', '4.png']
    dsets = Datasets(items, [[noop], [parent_label, Categorize()]], splits=[[0,1,2,3],[]])
    np.testing.assert_array_equal(class_counts(dsets).values, naive_counts(dsets))


def test_dataframe_colreader_single_and_multi():
    df = pd.DataFrame({'fn': [f'{i}.png' for i in range(200)],
                       'y': RNG.choice(['a','b','c'], 200, p=[.8,.15,.05]),
                       'tags': [' '.join(RNG.choice(list('pqrs'), RNG.integers(0, 4), replace=False)) for _ in range(200)],
                       'valid': RNG.random(200) < .2})
    db = DataBlock((TransformBlock, CategoryBlock), get_x=ColReader('fn'), get_y=ColReader('y'), splitter=ColSplitter('valid'))
    dsets = db.datasets(df)
    np.testing.assert_array_equal(class_counts(dsets).values, naive_counts(dsets))
    mb = DataBlock((TransformBlock, MultiCategoryBlock), get_x=ColReader('fn'), get_y=ColReader('tags', label_delim=' '), splitter=ColSplitter('valid'))
    mds = mb.datasets(df)
    c = class_counts(mds)
    assert c.attrs == {'n_items': int((~df.valid).sum()), 'multilabel': True}
    np.testing.assert_array_equal(c.values, naive_counts(mds))


def test_encoded_multilabel_columns():
    df = pd.DataFrame(RNG.integers(0, 2, (50, 4)), columns=list('wxyz'))
    df['fn'] = 'a.png'
    mb = DataBlock((TransformBlock, MultiCategoryBlock(encoded=True, vocab=list('wxyz'))), get_x=ColReader('fn'),
                   get_y=ColReader(list('wxyz')), splitter=IndexSplitter([]))
    c = class_counts(mb.datasets(df))
    np.testing.assert_array_equal(c.values, df[list('wxyz')].sum().values)


def test_tuple_items_fall_back_to_fastai():
    items = [(f'{i}.png', c) for i,c in enumerate(LABELS[:50])]
    dsets = Datasets(items, [[ItemGetter(0)], [ItemGetter(1), Categorize()]], splits=[list(range(50)), []])
    np.testing.assert_array_equal(class_counts(dsets).values, naive_counts(dsets))


def test_add_na_vocab_counts_unknown_as_na():
    items = paths(['a', 'b', 'a'])
    dsets = Datasets(items, [[noop], [parent_label, Categorize(vocab=['a'], add_na=True)]], splits=[[0,1,2], []])
    c = class_counts(dsets)
    assert c.index.tolist() == ['#na#', 'a'] and c.values.tolist() == [1, 2]


def test_dataloaders_open_no_image(lt_path, monkeypatch):
    dls = ImageDataLoaders.from_folder(lt_path, valid='valid', bs=8, num_workers=0)
    import PIL.Image
    def boom(*a, **k): raise AssertionError('an image was opened')
    monkeypatch.setattr(PIL.Image, 'open', boom)
    assert class_counts(dls).values.tolist() == [100, 60, 36, 22, 13, 8, 5, 3, 2, 1]
    assert class_counts(dls.train).values.tolist() == class_counts(dls).values.tolist()
    assert class_counts(dls, split='valid').values.tolist() == [50] * 10


def test_torchvision_imagefolder_targets(lt_path):
    from torchvision.datasets import ImageFolder
    ds = ImageFolder(lt_path/'train')
    c = class_counts(ds)
    assert c.index.tolist() == [str(i) for i in range(10)] and c.values.tolist() == [100, 60, 36, 22, 13, 8, 5, 3, 2, 1]
    assert class_counts(torch.utils.data.DataLoader(ds)).values.tolist() == c.values.tolist()


@pytest.mark.parametrize('labels,vocab,expected', [
    ([2, 0, 2], None, [1, 0, 2]),
    (np.array([1, 1]), ['a', 'b', 'c'], [0, 2, 0]),
    (torch.tensor([0., 1., 1.]), None, [1, 2]),
    (pd.Series(pd.Categorical(['x'], categories=['x', 'y'])), None, [1, 0]),
    (['b', 'a', 'b'], None, [1, 2]),
    (np.array([[1, 0], [1, 1], [0, 0]]), None, [2, 1]),
    (sparse.csr_matrix(np.array([[1, 0], [1, 1]])), ['p', 'q'], [2, 1]),
    ([('a', 'b'), ['a'], set()], None, [2, 1]),
])
def test_plain_labels(labels, vocab, expected):
    assert class_counts(labels, vocab=vocab).values.tolist() == expected


def test_scale_5000_classes_matches_bincount():
    y = RNG.integers(0, 5000, 200_000)
    items = [Path(f'/d/c{c:04d}/{i}.jpg') for i,c in enumerate(y)]
    dsets = Datasets(items, [[noop], [parent_label, Categorize(vocab=[f'c{c:04d}' for c in range(5000)])]], splits=[list(range(len(y))), []])
    np.testing.assert_array_equal(class_counts(dsets).values, np.bincount(y, minlength=5000))


@settings(max_examples=60, deadline=None)
@given(st.lists(st.integers(1, 10_000), min_size=2, max_size=30))
def test_balanced_weights_equal_sklearn(counts):
    y = np.repeat(np.arange(len(counts)), counts)
    ours = class_weights(class_counts(y)).numpy()
    np.testing.assert_allclose(ours, compute_class_weight('balanced', classes=np.arange(len(counts)), y=y), rtol=1e-6)
    for m in ('inverse', 'sqrt', 'effective'):
        w = class_weights(counts=counts, method=m).numpy()
        np.testing.assert_allclose(w.sum(), len(counts), rtol=1e-5)
        assert np.all(np.diff(w[np.argsort(counts, kind='stable')]) <= 1e-6)  # rarer class, larger weight
    np.testing.assert_allclose(class_priors(counts=counts).numpy(), np.array(counts) / sum(counts), rtol=1e-6)


def test_effective_number_formula():
    w = class_weights(counts=[1000, 10], method='effective', beta=0.99).numpy()
    raw = np.array([(1-.99)/(1-.99**1000), (1-.99)/(1-.99**10)])
    np.testing.assert_allclose(w, raw * 2 / raw.sum(), rtol=1e-6)


def test_pos_weight_multilabel(ml_path):
    df = pd.read_csv(ml_path/'labels.csv', keep_default_na=False)
    dls = ImageDataLoaders.from_df(df, ml_path, fn_col='fname', label_col='labels', label_delim=' ', valid_col='is_valid', bs=8, num_workers=0)
    c = class_counts(dls)
    train = df[~df.is_valid]
    pos = np.array([train.labels.str.split().map(lambda l: d in l).sum() for d in c.index])
    np.testing.assert_array_equal(c.values, pos)
    np.testing.assert_allclose(pos_weight(dls).numpy(), (len(train) - pos) / pos, rtol=1e-6)
    np.testing.assert_allclose(pos_weight(dls, power=.5, max_weight=3).numpy(), np.minimum(np.sqrt((len(train) - pos) / pos), 3), rtol=1e-6)
    np.testing.assert_allclose(class_priors(dls).numpy(), pos / len(train), rtol=1e-6)
    BCEWithLogitsLossFlat(pos_weight=pos_weight(dls))(torch.zeros(2, 10), torch.ones(2, 10))


# --- bad input: each raises early with a message naming the offending value ---

def _dsets(labels, vocab=None, valid=()):
    items = paths(labels)
    train = [i for i in range(len(items)) if i not in valid]
    return Datasets(items, [[noop], [parent_label, Categorize(vocab=vocab)]], splits=[train, list(valid)])

@pytest.mark.parametrize('call,exc,msg', [
    (lambda: class_counts([]), ValueError, "the data set is empty"),
    (lambda: class_counts(_dsets(['a', 'b']), split='valid'), ValueError, "split 'valid' has 0 items"),
    (lambda: class_counts(['a', 'q'], vocab=['a', 'b']), ValueError, "not in the vocab, e.g. ['q']"),
    (lambda: class_counts([0, 5], vocab=['a', 'b']), ValueError, "found [5]"),
    (lambda: class_counts([0, -1]), ValueError, "must be >= 0, found -1"),
    (lambda: class_counts([0.5, 1.]), ValueError, "whole class indices, found [0.5]"),
    (lambda: class_counts(np.array([0., np.nan])), ValueError, "labels contain NaN"),
    (lambda: class_counts(np.array([[0, 2]])), ValueError, "only 0 and 1, found [2]"),
    (lambda: class_counts(np.array([[0, 1]]), vocab=['a']), ValueError, "has 2 columns but the vocab has 1"),
    (lambda: class_counts(_dsets(['a']), split='test'), ValueError, "split='test'"),
    (lambda: class_counts(_dsets(['a']), split=5), ValueError, "has 2 split(s)"),
    (lambda: class_counts(_dsets(['a']), target=1), ValueError, "has 1 target(s)"),
    (lambda: class_counts(Datasets(paths('ab'), [[noop], [parent_label]])), TypeError, "need a categorical target"),
    (lambda: class_counts(Datasets(paths('ab'), [[noop]])), ValueError, "has no target"),
    (lambda: class_counts(DataBlock((TransformBlock, CategoryBlock))), ValueError, "needs its `source`"),
    (lambda: class_counts(3), TypeError, "cannot read labels from a int"),
    (lambda: class_counts(torch.utils.data.TensorDataset(torch.zeros(3))), TypeError, "this TensorDataset holds 1 tensor(s), so no labels"),
    (lambda: class_weights(counts=[3, 0, 2]), ValueError, "class [1] has no training samples"),
    (lambda: class_weights(_dsets(['a', 'b'], vocab=['a', 'b', 'zebra'])), ValueError, "class ['zebra'] has no training samples"),
    (lambda: class_weights(counts=[0, 0]), ValueError, "every class has 0 training samples"),
    (lambda: class_weights(counts=[3, -1]), ValueError, "counts must be finite and >= 0, found [-1.0] at positions [1]"),
    (lambda: class_weights(counts=[3, float('nan')]), ValueError, "counts must be finite and >= 0, found [nan] at positions [1]"),
    (lambda: class_weights(counts=[]), ValueError, "counts are empty"),
    (lambda: class_weights(counts=['a', 'b']), ValueError, "counts must be numbers, got ['a', 'b']"),
    (lambda: class_weights(counts=[[3, 1]]), ValueError, "counts must be 1-d, got shape (1, 2)"),
    (lambda: class_weights(counts=[3, 1], method='focal'), ValueError, "unknown method 'focal': use one of ('balanced'"),
    (lambda: class_weights(counts=[3, 1], method='effective', beta=1.), ValueError, "beta must lie in [0, 1), got 1.0"),
    (lambda: class_weights(counts=[3, 0], zero='skip'), ValueError, "zero='skip': use one of ('raise', 'zero', 'max')"),
    (lambda: class_weights(), ValueError, "pass either data"),
    (lambda: class_weights([0, 1], counts=[1, 1]), ValueError, "pass either data"),
    (lambda: pos_weight(counts=[3, 1]), ValueError, "need `n_items`"),
    (lambda: pos_weight(counts=[3, 0], n_items=5), ValueError, "class [1] has no positive items"),
    (lambda: pos_weight(counts=[7, 1], n_items=5), ValueError, "more positives (7) than there are items (5)"),
    (lambda: pos_weight(counts=[3, 1], n_items=5, power=-1), ValueError, "power must be >= 0, got -1"),
    (lambda: pos_weight(['a', 'b']), ValueError, "for multilabel targets"),
    (lambda: class_priors(counts=[0, 0]), ValueError, "the priors are undefined"),
])
def test_bad_input(call, exc, msg):
    with pytest.raises(exc, match=re.escape(msg)): call()


def test_zero_policies():
    w0 = class_weights(counts=[8, 2, 0], zero='zero')
    assert w0[2] == 0 and w0[0] < w0[1]
    wm = class_weights(counts=[8, 2, 0], zero='max', method='sqrt')
    assert wm[2] == wm[1] == wm.max()
