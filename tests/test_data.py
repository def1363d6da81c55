"ResampledDL: the draws match each strategy's targets (chi-square over many epochs), reproducibility, inference paths, bad input."
import re, warnings
import numpy as np, pandas as pd, torch, pytest
from scipy import sparse, stats
from fastai.data.all import Datasets, DataLoaders, TfmdDL, Categorize, parent_label, noop, set_seed
from fastai.vision.data import ImageDataLoaders
from fastai_imbalance.core import class_counts, class_weights
from fastai_imbalance.data import ResampledDL
from fastai_imbalance.sampling import ClassSampler, _systematic

RNG = np.random.default_rng(0)


def lt_labels(k=20, n_max=500, ratio=100):
    sizes = np.maximum(1, np.round(n_max * ratio ** (-np.arange(k) / (k - 1)))).astype(int)
    return np.repeat(np.arange(k), sizes), sizes


def dl_from_labels(y, bs=16, **kw):
    "A ResampledDL over a plain list data set with given labels"
    return ResampledDL(list(range(len(y))), labels=y, bs=bs, num_workers=0, **kw)


def pooled_counts(dl, epochs, k):
    rng = np.random.default_rng(123)
    return sum(np.bincount(dl.labels[dl.draw(rng)], minlength=k) for _ in range(epochs))


def chi2_ok(observed, expected, alpha=1e-3):
    keep = expected > 0
    stat = (((observed - expected) ** 2)[keep] / expected[keep]).sum()
    return stat < stats.chi2.ppf(1 - alpha, keep.sum() - 1), stat


@pytest.mark.parametrize('strategy,target', [
    ('balanced', lambda s: np.ones_like(s, float)),
    ('sqrt', lambda s: np.sqrt(s)),
    (0.25, lambda s: s ** 0.25),
    ('natural', lambda s: s.astype(float)),
])
def test_class_frequencies_match_strategy(strategy, target):
    y, sizes = lt_labels()
    for replace in (None, True):
        dl = dl_from_labels(y, strategy=strategy, replace=replace, n=1000)
        obs = pooled_counts(dl, 200, len(sizes))
        p = target(sizes); exp = 200 * 1000 * p / p.sum()
        ok, stat = chi2_ok(obs, exp)
        assert ok, (strategy, replace, stat)
        assert obs.sum() == 200 * 1000


def test_within_class_draws_are_uniform_and_without_replacement():
    y, sizes = lt_labels(k=5, n_max=40, ratio=10)
    dl = dl_from_labels(y, strategy='balanced', n=100)
    rng = np.random.default_rng(5)
    hits = np.zeros(len(y))
    for _ in range(2000):
        idx = dl.draw(rng)
        for c in range(5):
            m = idx[y[idx] == c]
            # each item at most ceil(m/size) times and at least floor(m/size) times: no item repeats before all have appeared
            reps = np.bincount(m, minlength=len(y))[y == c]
            assert reps.max() - reps.min() <= 1
        np.add.at(hits, idx, 1)
    for c in range(5):  # every item of a class equally often
        h = hits[y == c]
        assert chi2_ok(h, np.full(len(h), h.mean()))[0]


def test_oversample_undersample_targets_are_exact():
    y, sizes = lt_labels(k=6, n_max=60, ratio=20)
    o = dl_from_labels(y, strategy='oversample')
    assert o.n_draws == 6 * 60 and (np.bincount(y[o.draw()], minlength=6) == 60).all()
    u = dl_from_labels(y, strategy='undersample')
    idx = u.draw()
    assert (np.bincount(y[idx], minlength=6) == sizes.min()).all() and len(set(idx)) == len(idx)
    t = dl_from_labels(y, targets=[5, 0, 0, 0, 0, 7])
    assert np.bincount(y[t.draw()], minlength=6).tolist() == [5, 0, 0, 0, 0, 7]


def test_item_weights_and_class_weights():
    y, sizes = lt_labels(k=4, n_max=100, ratio=10)
    w = np.where(y == 3, 10., 1.)
    dl = dl_from_labels(y, item_weights=w, n=500)
    obs = pooled_counts(dl, 300, 4)
    p = np.bincount(y, weights=w, minlength=4)
    assert chi2_ok(obs, 300 * 500 * p / p.sum())[0]
    cw = dl_from_labels(y, class_weights=class_weights(counts=sizes), n=400)
    assert np.allclose(cw.expected_counts(), 100.)


def test_per_batch_blocks_and_length():
    y, sizes = lt_labels(k=8)
    dl = dl_from_labels(y, strategy='balanced', per_batch=4, n=1001)
    assert dl.n_draws == 1000
    idx = dl.draw(np.random.default_rng(0)).reshape(-1, 4)
    assert (y[idx] == y[idx[:, :1]]).all()


def test_set_seed_reproduces_epochs(lt_path):
    def epochs():
        set_seed(42)
        dls = ImageDataLoaders.from_folder(lt_path, valid='valid', bs=16, num_workers=0).resampled('balanced')
        out = []
        for _ in range(3):
            dls.train.randomize(); dls.train.before_iter(); out.append(list(dls.train.get_idxs()))  # as DataLoader.__iter__ does
        return out
    a, b = epochs(), epochs()
    assert a == b and a[0] != a[1]


def test_numpy_global_rng_untouched():
    y, _ = lt_labels(k=3)
    dl = dl_from_labels(y)
    np.random.seed(0); before = np.random.random()
    np.random.seed(0); dl.before_iter(); dl.get_idxs(); after = np.random.random()
    assert before == after


def test_inference_paths_never_resample(lt_path):
    from fastai.vision.all import vision_learner, resnet18
    dls = ImageDataLoaders.from_folder(lt_path, valid='valid', bs=16, num_workers=0).resampled('oversample')
    assert len(dls.train) == 1000 // 16
    learn = vision_learner(dls, resnet18, pretrained=False)
    preds, targs = learn.get_preds(ds_idx=0)
    assert len(targs) == 250 and np.bincount(targs.numpy()).tolist() == class_counts(dls).tolist()
    preds, targs = learn.get_preds(dl=dls.train)
    assert len(targs) == 250
    with learn.no_bar(): res = learn.validate(ds_idx=0)  # iterates the training loader itself, under no_grad
    assert np.isfinite(res[0])
    assert dls.train.new(shuffled=False).shuffle is False
    with learn.no_bar(): p, t = learn.tta(ds_idx=0, n=1)
    assert len(t) == 250


def test_plain_torch_dataset_and_multilabel_matrix():
    y, sizes = lt_labels(k=5, n_max=50)
    ds = torch.utils.data.TensorDataset(torch.randn(len(y), 3), torch.tensor(y))
    dl = ResampledDL(ds, labels=y, bs=8, strategy='balanced', num_workers=0)
    xb, yb = dl.one_batch()
    assert xb.shape == (8, 3)
    Y = (RNG.random((300, 6)) < np.array([.6, .3, .1, .05, .02, .01])).astype(int)
    Y[0] = [0, 0, 0, 0, 0, 1]
    mdl = ResampledDL(list(range(300)), labels=Y, bs=8, strategy='balanced', num_workers=0)
    s = mdl.sampling_summary()
    assert s.attrs['spread_after'] < s.attrs['spread_before']
    obs = sum(np.asarray(sparse.csr_matrix(Y)[mdl.draw(np.random.default_rng(i))].sum(0)).ravel() for i in range(300))
    assert np.allclose(obs / 300, mdl.expected_counts(), rtol=0.1)


def _ds(labels, vocab=None):
    items = [f'/x/{c}/{i}.png' for i, c in enumerate(labels)]
    return Datasets(items, [[noop], [parent_label, Categorize(vocab=vocab)]], splits=[list(range(len(items))), []])


@pytest.mark.parametrize('kw,exc,msg', [
    (dict(strategy='oversampling'), ValueError, "unknown strategy 'oversampling': use one of ('natural', 'oversample', 'undersample', 'balanced', 'sqrt')"),
    (dict(strategy=float('nan')), ValueError, "finite float"),
    (dict(item_weights=[1, 2]), ValueError, "item_weights has 2 entries but must have 6, one per item of the training split"),
    (dict(class_weights=[1, 1]), ValueError, "class_weights has 2 entries but must have 3, one per class"),
    (dict(class_weights=[1, -2, 1]), ValueError, "found [-2.0] at positions [1]"),
    (dict(item_weights=[1, 1, np.nan, 1, 1, 1]), ValueError, "must be finite and >= 0, found [nan]"),
    (dict(item_weights=[0] * 6), ValueError, "are all zero"),
    (dict(targets={'zebra': 3}), ValueError, "targets name classes not in the vocab: ['zebra']"),
    (dict(targets=[1.5, 1, 1]), ValueError, "whole numbers"),
    (dict(strategy='undersample', n_per_class=3), ValueError, "undersample asks for 3 draws of class 'c'"),
    (dict(strategy='oversample', replace=False), ValueError, "oversample asks for 3 draws of class 'c' per epoch, but it has 1 item"),
    (dict(strategy='balanced', per_batch=0), ValueError, "per_batch must be a positive int"),
    (dict(n=0), ValueError, "n (draws per epoch) must be a positive int"),
    (dict(targets=[1, 1, 1], item_weights=[1] * 6), ValueError, "pass at most one of"),
    (dict(absent='ignore'), ValueError, "absent='ignore'"),
])
def test_bad_input_at_construction(kw, exc, msg):
    ds = _ds(['a', 'a', 'a', 'b', 'b', 'c'])
    with pytest.raises(exc, match=re.escape(msg)): ResampledDL(ds, bs=2, num_workers=0, **kw)


def test_absent_class():
    ds = _ds(['a', 'a', 'b'], vocab=['a', 'b', 'ghost'])
    with pytest.raises(ValueError, match=re.escape("class ['ghost'] has no training items, so strategy 'balanced' cannot draw it: pass absent='skip'")):
        ResampledDL(ds, bs=2, num_workers=0, strategy='balanced')
    dl = ResampledDL(ds, bs=2, num_workers=0, strategy='balanced', absent='skip')
    assert dl.expected_counts().tolist()[2] == 0
    ResampledDL(ds, bs=2, num_workers=0, strategy='sqrt')  # α > 0 never draws an empty class: no error


def test_labels_length_and_missing_labels():
    with pytest.raises(ValueError, match='labels has 3 entries but the dataset has 4 items'):
        ResampledDL(list(range(4)), labels=[0, 1, 1], bs=2)
    with pytest.raises(TypeError, match='ResampledDL needs the class of every item'):
        ResampledDL(torch.utils.data.TensorDataset(torch.zeros(4)), bs=2)


def test_systematic_properties():
    rng = np.random.default_rng(1)
    p = RNG.random(50) ** 3
    ms = np.stack([_systematic(p, 37, rng) for _ in range(5000)])
    assert (ms.sum(1) == 37).all()
    assert np.allclose(ms.mean(0), 37 * p / p.sum(), atol=0.05)


def test_factories_and_validation_untouched(lt_path):
    from fastai.vision.all import DataBlock, ImageBlock, CategoryBlock, get_image_files, GrandparentSplitter
    db = DataBlock((ImageBlock, CategoryBlock), get_items=get_image_files, get_y=parent_label, splitter=GrandparentSplitter(valid_name='valid'))
    dls = db.resampled_dataloaders(lt_path, bs=16, num_workers=0, strategy='sqrt', n=300)
    assert isinstance(dls.train, ResampledDL) and type(dls.valid) is TfmdDL and dls.train.n_draws == 300
    from fastai.vision.all import ToTensor, IntToFloatTensor
    ds_dls = db.datasets(lt_path).resampled_dataloaders(bs=16, num_workers=0, strategy='undersample', after_item=[ToTensor()], after_batch=[IntToFloatTensor()])
    assert ds_dls.train.n_draws == 10
    with pytest.raises(TypeError, match='unexpected argument'): dls.resampled('balanced', weights=[1])
    # `new` keeps the sampling options
    assert dls.train.new(bs=4).n_draws == 300 and dls.train.new(bs=4).bs == 4


def test_export_of_a_resampled_learner(lt_path, tmp_path):
    "`learn.export()` empties the loaders (`dls.new_empty()`); a resampled training loader must not refuse that (it did: 'the training split is empty')"
    from fastai.vision.all import vision_learner, load_learner
    from conftest import tiny_arch
    set_seed(0)
    dls = ImageDataLoaders.from_folder(lt_path, valid='valid', bs=16, num_workers=0).resampled('balanced')
    learn = vision_learner(dls, tiny_arch, pretrained=False)
    learn.export(tmp_path/'resampled.pkl')
    assert type(learn.dls.train) is ResampledDL  # export put the learner's own loaders back
    served = load_learner(tmp_path/'resampled.pkl')
    assert type(served.dls.train) is TfmdDL and len(served.dls.train.dataset) == 0
    pred, _, probs = served.predict(sorted((lt_path/'valid'/'9').glob('*.png'))[0])
    assert pred in dls.vocab and abs(float(probs.sum()) - 1) < 1e-5
    with pytest.raises(ValueError, match='the training split is empty'): ResampledDL(dls.train.dataset.new_empty(), bs=4)


# --- inference sees every item once, a new strategy replaces the old, whole blocks, workers ---

@pytest.mark.parametrize('drop_last', [False, True])
def test_get_preds_on_a_resampled_train_loader_sees_every_item_once(lt_path, drop_last):
    from fastai.vision.all import vision_learner
    from conftest import tiny_arch
    dls = ImageDataLoaders.from_folder(lt_path, valid='valid', bs=16, num_workers=0).resampled('oversample', drop_last=drop_last)
    learn = vision_learner(dls, tiny_arch, pretrained=False)
    with learn.no_bar(): p, y = learn.get_preds(dl=dls.train)  # fastai calls get_idxs() here with gradients on
    n = len(dls.train_ds)
    assert len(p) == len(y) == n
    assert np.bincount(y.numpy(), minlength=10).tolist() == class_counts(dls).tolist()
    assert len(dls.train) == (1000 // 16 if drop_last else -(-1000 // 16))  # training length is still the resampled epoch's


def test_a_new_strategy_replaces_the_old(lt_path):
    dls = ImageDataLoaders.from_folder(lt_path, valid='valid', bs=16, num_workers=0)
    w = np.linspace(1, 5, 10)
    a = dls.resampled(class_weights=w)
    assert a.train.mode == 'class_weights'
    b = a.resampled('sqrt')
    assert b.train.mode == 'alpha' and b.train.alpha == .5 and b.train.class_weights is None
    e = b.train.expected_counts(); s = np.sqrt(class_counts(dls).values)
    assert np.allclose(e / e.sum(), s / s.sum())
    c = dls.resampled('oversample', per_batch=4).resampled('balanced')
    assert c.train.per_batch is None and c.train.mode == 'alpha'


def test_per_batch_targets_are_whole_blocks():
    y = np.repeat([0, 1, 2], [10, 10, 10])
    with pytest.warns(UserWarning, match=re.escape('targets rounded to whole blocks of per_batch=4: [3, 5, 0] -> [4, 4, 0]')):
        dl = dl_from_labels(y, targets=[3, 5, 0], per_batch=4)
    idx = dl.draw(np.random.default_rng(0)).reshape(-1, 4)
    assert (y[idx] == y[idx[:, :1]]).all() and sorted(np.bincount(y[idx.ravel()], minlength=3).tolist()) == [0, 4, 4]


def test_workers_give_the_same_draws_and_every_item_at_inference(lt_path):
    def batches(nw):
        set_seed(3)
        dls = ImageDataLoaders.from_folder(lt_path, valid='valid', bs=25, num_workers=nw).resampled('balanced')  # 250 draws: no batch dropped
        return [y.tolist() for _, y in dls.train], dls
    a, _ = batches(0)
    b, dls = batches(2)
    assert a == b  # the same seeded epoch with and without workers (the order is drawn in the main process)
    assert np.bincount(np.concatenate(b), minlength=10).tolist() == [25] * 10  # systematic draws: exactly balanced
    inf = dls.train.new(shuffle=False, drop_last=False)
    ys = torch.cat([y for _, y in inf])
    assert len(ys) == len(dls.train_ds) and np.bincount(ys.numpy(), minlength=10).tolist() == class_counts(dls).tolist()


def test_progressive_balancing_puts_alpha_back_and_takes_fastai_schedules(lt_path):
    from fastai.vision.all import vision_learner, SchedCos, sched_cos, Callback
    from fastai_imbalance.finetune import ProgressiveBalancing
    from conftest import tiny_arch
    dls = ImageDataLoaders.from_folder(lt_path, valid='valid', bs=32, num_workers=0).resampled(.7)
    learn = vision_learner(dls, tiny_arch, pretrained=False)
    class A(Callback):
        order = 50
        def before_fit(self): self.a = []
        def before_train(self): self.a.append(self.dls.train.alpha)
    for sched in (SchedCos, sched_cos, None):
        rec = A()
        with learn.no_bar(), learn.no_logging(): learn.fit(3, cbs=[ProgressiveBalancing(sched=sched), rec])
        assert np.allclose(rec.a, [1., .5, 0.]) and dls.train.alpha == .7 and learn.dls.train is dls.train


def test_vocab_stays_fastais_and_interpretation_works(lt_path):
    from fastai.vision.all import vision_learner, ClassificationInterpretation, CategoryMap
    from conftest import tiny_arch
    dls = ImageDataLoaders.from_folder(lt_path, valid='valid', bs=16, num_workers=0)
    r = dls.resampled('balanced')
    assert isinstance(r.train.vocab, CategoryMap) and list(r.train.vocab) == list(dls.vocab)
    learn = vision_learner(r, tiny_arch, pretrained=False)
    with learn.no_bar(): interp = ClassificationInterpretation.from_learner(learn, ds_idx=0)
    cm = interp.confusion_matrix()
    assert cm.shape == (10, 10) and cm.sum() == len(dls.train_ds)
