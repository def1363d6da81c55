"ImbalanceInterpretation and operating thresholds: tables against scikit-learn, 150-class readability, thresholds that hold."
import re
import numpy as np, pandas as pd, pytest, torch
import matplotlib; matplotlib.use('Agg')
from sklearn.metrics import confusion_matrix, roc_curve, recall_score
from fastai_imbalance.interpret import ImbalanceInterpretation, OperatingThreshold


def fake(probs, targs, train_counts):
    "An interpretation over given predictions (no learner): what from_learner stores"
    it = ImbalanceInterpretation.__new__(ImbalanceInterpretation)
    it.probs, it.targs = torch.as_tensor(probs).float(), torch.as_tensor(targs).long()
    it.vocab = [f'c{i}' for i in range(it.probs.shape[1])]
    it.train_counts = pd.Series(train_counts, index=it.vocab)
    return it


def test_tables_at_150_classes():
    g = np.random.default_rng(0)
    C, n = 150, 3000
    counts = np.maximum(1, (1000 * np.arange(1, C + 1) ** -1.2).astype(int))
    y = g.integers(0, C, n)
    z = g.normal(size=(n, C)); z[np.arange(n), y] += 2.5; z += np.log(counts / counts.sum())  # skewed towards frequent classes
    it = fake(torch.tensor(z).softmax(1), y, counts)
    cm = it.confusion_matrix()
    assert (cm == confusion_matrix(y, z.argmax(1), labels=range(C))).all()
    pc = it.per_class()
    assert list(pc.train) == sorted(counts, reverse=True)
    assert np.allclose(pc.sort_index(key=lambda i: i.str[1:].astype(int)).recall.fillna(0), recall_score(y, z.argmax(1), average=None, labels=range(C), zero_division=0))
    tc = it.top_confusions(10)
    off = cm.copy(); np.fill_diagonal(off, 0)
    assert len(tc) == 10 and tc['count'].iloc[0] == off.max() and (np.diff(tc['count'].values) <= 0).all()
    sh = it.shot_table(many=100, few=20)
    assert int(sh.loc[['many', 'medium', 'few'], 'classes'].sum()) == C and sh.loc['many', 'accuracy'] > sh.loc['few', 'accuracy']
    ax = it.plot_confusion_matrix()  # 150 classes: an image, no per-cell text
    assert len(ax.texts) == 0 and ax.images[0].get_array().shape == (C, C)
    ax = it.plot_class_distribution()  # 150 classes: one step artist per series (train filled, valid outlined), not 300 bar patches; the heights are the counts
    assert len(ax.patches) == 2 and [p.get_label() for p in ax.patches] == ['train', 'valid']
    assert np.array_equal(ax.patches[0].get_data().values, pc.train.values) and np.array_equal(ax.patches[1].get_data().values, pc.support.values)
    assert ax.patches[0].get_fill() and not ax.patches[1].get_fill()  # the two series do not hide each other
    it.plot_recall_vs_frequency()
    small = fake(torch.rand(6, 3).softmax(1), [0, 1, 2, 0, 1, 2], [5, 3, 1])
    assert len(small.plot_class_distribution().patches) == 6  # a few classes: bars, with their names


@pytest.mark.parametrize('spec', [0.5, 0.9, 0.99])
def test_threshold_for_specificity_and_sensitivity(spec):
    g = np.random.default_rng(1)
    y = (g.random(4000) < .01).astype(int)
    s = 1 / (1 + np.exp(-(g.normal(size=4000) + 2.5 * y - 3)))
    it = fake(np.stack([1 - s, s], 1), y, [3960, 40])
    r = it.threshold_for(specificity=spec)
    pred = s >= r['threshold']
    assert (~pred[y == 0]).mean() >= spec - 1e-12 and pred[y == 1].mean() == pytest.approx(r['sensitivity'])
    fpr, tpr, _ = roc_curve(y, s, drop_intermediate=False)
    assert r['sensitivity'] == pytest.approx(tpr[fpr <= 1 - spec + 1e-12].max())  # the best sensitivity at that specificity
    assert int(r['confusion'].values.sum()) == 4000
    r2 = it.threshold_for(sensitivity=0.8)
    assert (s[y == 1] >= r2['threshold']).mean() >= 0.8 and r2['specificity'] == pytest.approx((1 - fpr[tpr >= 0.8 - 1e-12]).max())


@pytest.mark.parametrize('call,msg', [
    (lambda it: it.threshold_for(), "pass exactly one of specificity= or sensitivity="),
    (lambda it: it.threshold_for(specificity=1.2), "specificity must lie in [0, 1], got 1.2"),
    (lambda it: fake(torch.rand(5, 3).softmax(1), [0, 1, 2, 0, 1], [3, 2, 1]).threshold_for(specificity=.9), "the model has 3 classes: pass pos="),
    (lambda it: fake(torch.rand(4, 2).softmax(1), [0, 0, 0, 0], [3, 1]).threshold_for(specificity=.9), "class c1 needs positives and negatives"),
    (lambda it: OperatingThreshold(1.), "threshold must lie strictly between 0 and 1"),
])
def test_bad_input(call, msg):
    it = fake(torch.rand(6, 2).softmax(1), [0, 1, 0, 1, 0, 0], [5, 1])
    with pytest.raises(ValueError, match=re.escape(msg)): call(it)


def test_on_real_images_operating_threshold(lt_path):
    from fastai.vision.all import ImageDataLoaders, vision_learner, set_seed
    from conftest import tiny_arch
    from fastai_imbalance.interpret import ImbalanceInterpretation
    set_seed(0)
    dls = ImageDataLoaders.from_folder(lt_path, valid='valid', bs=64, num_workers=0)
    learn = vision_learner(dls, tiny_arch, pretrained=False)
    with learn.no_bar(), learn.no_logging(): learn.fit(1)
    with learn.no_bar(): it = ImbalanceInterpretation.from_learner(learn)
    p, y = learn.get_preds()
    assert (it.confusion_matrix() == confusion_matrix(y, p.argmax(1), labels=range(10))).all()
    assert list(it.per_class().train) == [100, 60, 36, 22, 13, 8, 5, 3, 2, 1]
    with pytest.raises(ValueError, match='the model has 10 classes: pass pos='): learn.threshold_for(specificity=.9)
    r = it.threshold_for(specificity=.8, pos='9')
    assert r['specificity'] >= .8


def test_operating_threshold_decisions_on_the_rare_positive():
    from fastai.vision.all import ImageDataLoaders, vision_learner, set_seed
    from conftest import tiny_arch
    from fastai_imbalance.datasets import digits_rare
    dls = ImageDataLoaders.from_folder(digits_rare(), valid='valid', bs=64, num_workers=0)
    set_seed(0)
    learn = vision_learner(dls, tiny_arch, pretrained=False)
    with learn.no_bar(), learn.no_logging(): learn.fit(1)
    with learn.no_bar():
        before = learn.validate()
        r = learn.threshold_for(specificity=0.9, apply=True)
        _, y, dec = learn.get_preds(with_decoded=True)
        after = learn.validate()
    assert (dec[y == 0] == 0).double().mean() >= 0.9 and (dec[y == 1] == 1).double().mean() == pytest.approx(r['sensitivity'])
    assert list(map(float, after)) == list(map(float, before))  # validation (a later fit's valid loss and metrics) sees the model's own logits
    with learn.no_bar(), learn.no_logging(): learn.fit(1, lr=0.)  # a later fit: its valid loss is the plain model's
    fit_valid = learn.recorder.values[-1][1]
    th = [c for c in learn.cbs if isinstance(c, OperatingThreshold)][0]
    learn.remove_cb(th)
    with learn.no_bar(): plain = learn.validate()
    learn.add_cb(th)
    assert fit_valid == pytest.approx(plain[0], abs=1e-6)
    with learn.no_bar(): shifted = learn.validate(cbs=OperatingThreshold(r['threshold'], in_validation=True))
    assert shifted[0] != pytest.approx(plain[0], abs=1e-6)  # asked for: the validation loss is computed on the shifted logits
    assert sum(isinstance(c, OperatingThreshold) for c in learn.cbs) == 1
    learn.threshold_for(sensitivity=0.5, apply=True)  # replaces, never stacks
    assert sum(isinstance(c, OperatingThreshold) for c in learn.cbs) == 1


def _best_fbeta_brute(p, y, beta):
    "Best F-beta of one label over every candidate threshold (each distinct score, and above the maximum), by scikit-learn"
    from sklearn.metrics import fbeta_score
    cands = np.r_[np.unique(p), p.max() + 1]
    return max(fbeta_score(y, p >= t, beta=beta, zero_division=0) for t in cands)


@pytest.mark.parametrize('beta', [0.5, 1., 2.])
def test_label_thresholds_are_the_best_fbeta(beta):
    from sklearn.metrics import fbeta_score
    from fastai_imbalance.interpret import label_thresholds
    g = np.random.default_rng(int(beta * 10))
    n, L = 400, 12
    y = g.random((n, L)) < np.geomspace(0.4, 0.01, L)
    y[0, -1] = True  # every label has a positive
    p = np.round(1 / (1 + np.exp(-(g.normal(size=(n, L)) + 1.5 * y - 1))), 2)  # rounded: many ties
    lt = label_thresholds(torch.tensor(p), torch.tensor(y), beta=beta)
    for j in range(L):
        best = _best_fbeta_brute(p[:, j], y[:, j], beta)
        got = fbeta_score(y[:, j], p[:, j] >= lt.threshold.iloc[j], beta=beta, zero_division=0)
        assert got == pytest.approx(best, abs=1e-12) and lt[f'f{beta:g}'].iloc[j] == pytest.approx(best, abs=1e-12)
        assert not np.isclose(p[:, j], lt.threshold.iloc[j]).any()  # halfway between scores: ties cannot straddle it
    assert (lt[f'f{beta:g}'] >= lt[f'f{beta:g} at 0.5'] - 1e-12).all()


def test_label_thresholds_bad_input_and_absent_labels():
    from fastai_imbalance.interpret import label_thresholds, PerLabelThreshold
    p, y = torch.rand(10, 3), (torch.rand(10, 3) < .5).long()
    y[:, 2] = 0
    with pytest.warns(UserWarning, match=re.escape("1 label(s) with fewer than 1 positive(s) keep threshold 0.5: ['z']")):
        lt = label_thresholds(p, y, vocab=['x', 'y', 'z'])
    assert lt.threshold['z'] == .5 and lt.threshold['x'] != .5
    y[:, 1] = 0; y[:3, 1] = 1
    with pytest.warns(UserWarning, match=re.escape("2 label(s) with fewer than 4 positive(s) keep threshold 0.5: ['y', 'z']")):
        lt = label_thresholds(p, y, vocab=['x', 'y', 'z'], min_positives=4)
    assert (lt.threshold[['y', 'z']] == .5).all()
    bad = p.clone(); bad[3, 1] = float('nan')
    for call, msg in [(lambda: label_thresholds(bad, y), 'must be finite and lie in [0, 1], found [nan]'),
                      (lambda: label_thresholds(p * 2 + 1, y), 'must be finite and lie in [0, 1]'),
                      (lambda: label_thresholds(p, y[:, :2]), 'of one shape, got (10, 3) and (10, 2)'),
                      (lambda: label_thresholds(p, y, beta=0), 'beta must be > 0, got 0'),
                      (lambda: label_thresholds(p, y, vocab=['a']), 'vocab has 1 names for 3 labels'),
                      (lambda: label_thresholds(p, y, min_positives=0), 'min_positives must be an integer >= 1, got 0'),
                      (lambda: PerLabelThreshold([.2, 1.]), 'strictly between 0 and 1, got [1.0]'),
                      (lambda: PerLabelThreshold([[.2, .3]]), 'got (1, 2)')]:
        with pytest.raises(ValueError, match=re.escape(msg)): call()


def test_label_thresholds_on_a_learner(ml_path):
    "Installed thresholds decide fastai's decoded predictions, survive export, and refuse softmax losses or a moved `thresh`"
    from fastai.vision.all import DataBlock, ImageBlock, MultiCategoryBlock, ColReader, ColSplitter, Resize, vision_learner, set_seed, BCEWithLogitsLossFlat
    from fastai.learner import load_learner
    from conftest import tiny_arch
    from fastai_imbalance.interpret import PerLabelThreshold
    from fastai_imbalance.losses import SoftmaxMultilabelLoss, AsymmetricLoss
    df = pd.read_csv(ml_path/'labels.csv', keep_default_na=False)
    db = DataBlock((ImageBlock, MultiCategoryBlock), get_x=ColReader('fname', pref=f'{ml_path}/'), get_y=ColReader('labels', label_delim=' '),
                   splitter=ColSplitter('is_valid'), item_tfms=Resize(32))
    set_seed(0)
    dls = db.dataloaders(df, bs=64, num_workers=0)
    learn = vision_learner(dls, tiny_arch, pretrained=False, loss_func=AsymmetricLoss())
    with learn.no_bar(), learn.no_logging(): learn.fit(1)
    with learn.no_bar():
        p0, y = learn.get_preds()
        v0 = learn.validate()
        lt = learn.label_thresholds(apply=True)
        learn.label_thresholds(apply=True)  # replaces, never stacks
        _, _, dec = learn.get_preds(with_decoded=True)
        assert list(map(float, learn.validate())) == list(map(float, v0))  # validation: the model's own logits
    assert sum(isinstance(c, PerLabelThreshold) for c in learn.cbs) == 1
    assert (dec.bool() == (p0 >= torch.tensor(lt.threshold.values, dtype=torch.float32))).all()
    learn.export(ml_path/'ml.pkl')
    served = load_learner(ml_path/'ml.pkl')
    with served.no_bar(): _, _, dec2 = served.get_preds(dl=dls.valid, with_decoded=True)
    assert (dec2 == dec).all()
    learn.loss_func = AsymmetricLoss(thresh=.3)
    with pytest.raises(ValueError, match=re.escape('AsymmetricLoss decides at thresh=0.3')): learn.label_thresholds()
    learn.loss_func = SoftmaxMultilabelLoss(dls)
    with pytest.raises(ValueError, match='SoftmaxMultilabelLoss.s activation is not an elementwise sigmoid'): learn.label_thresholds()


def _tensor_learner(y, C, seed=0):
    "A plain-tensor `Learner`: `TensorDataset`s (no vocab), a linear model over 4 features, fastai's cross-entropy"
    from torch import nn
    from torch.utils.data import TensorDataset
    from fastai.data.core import DataLoaders
    from fastai.learner import Learner
    from fastai.losses import CrossEntropyLossFlat
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(len(y), 4, generator=g); x[:, 0] += 1.5 * y.float()
    n = len(y) // 2
    torch.manual_seed(seed)
    dls = DataLoaders.from_dsets(TensorDataset(x[:n], y[:n]), TensorDataset(x[n:], y[n:]), bs=32)
    return Learner(dls, nn.Linear(4, C), loss_func=CrossEntropyLossFlat())


def test_plain_tensor_learner_class_report_and_threshold_for():
    "Data without a vocab: the classes are named by their indices 0 ... C-1"
    g = torch.Generator().manual_seed(1)
    y = torch.bucketize(torch.rand(400, generator=g), torch.tensor([.6, .9]))  # classes 0, 1, 2: 60%, 30%, 10%
    learn = _tensor_learner(y, 3)
    with learn.no_bar(): p, yv = learn.get_preds()
    rep = learn.class_report()
    assert sorted(rep.index) == [0, 1, 2] and list(rep.train) == sorted(np.bincount(y[:200].numpy(), minlength=3), reverse=True)
    assert rep.loc[2, 'recall'] == pytest.approx(recall_score(yv, p.argmax(1), average=None, labels=range(3), zero_division=0)[2])
    it = ImbalanceInterpretation.from_learner(learn)
    assert it.vocab == [0, 1, 2] and (it.confusion_matrix() == confusion_matrix(yv, p.argmax(1), labels=range(3))).all()
    assert int(it.shot_table(many=50, few=30).loc['all', 'valid items']) == 200
    yb = (y == 2).long()
    lb = _tensor_learner(yb, 2)
    r = lb.threshold_for(specificity=.9)
    with lb.no_bar(): pb, yvb = lb.get_preds()
    fpr, tpr, _ = roc_curve(yvb, pb[:, 1], drop_intermediate=False)
    assert r['specificity'] >= .9 and r['sensitivity'] == pytest.approx(tpr[fpr <= .1 + 1e-12].max())
    assert list(r['confusion'].index) == ['actual negative', 'actual positive']


def test_interpretation_without_training_counts_says_what_to_pass():
    "Data whose labels cannot be read without loading it: thresholds still work; the tables that need training counts say how to pass them"
    from torch.utils.data import Dataset
    g = torch.Generator().manual_seed(2)
    y = (torch.rand(300, generator=g) < .2).long()
    learn = _tensor_learner(y, 2)
    class Items(Dataset):  # (x, y) items behind a plain Dataset: no `targets`, no tensors to read
        def __init__(self, ds): self.ds = ds
        def __len__(self): return len(self.ds)
        def __getitem__(self, i): return self.ds[i]
    from fastai.data.core import DataLoaders
    learn.dls = DataLoaders.from_dsets(Items(learn.dls.train_ds), Items(learn.dls.valid_ds), bs=32)
    it = ImbalanceInterpretation.from_learner(learn)
    assert it.threshold_for(specificity=.8)['specificity'] >= .8
    with pytest.raises(ValueError, match=re.escape("pass them: ImbalanceInterpretation.from_learner(learn, train_counts=...), one count per class in class order")):
        it.shot_table()
    it2 = ImbalanceInterpretation.from_learner(learn, train_counts=[240, 60])
    assert list(it2.per_class().train) == [240, 60]
    with pytest.raises(ValueError, match="train_counts has 3 entries but must have 2, one per class"): ImbalanceInterpretation.from_learner(learn, train_counts=[1, 2, 3])
