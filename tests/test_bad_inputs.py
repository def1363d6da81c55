"""A catalogue of bad inputs and awkward data across the public API.

Each case asserts the exact exception type and a message that names the offending value, or the documented behaviour.
Friends elsewhere: a fit interrupted in the balanced stage (`test_finetune.py::test_restored_however_the_fit_ends`: loader, freeze state and loss restored),
`load_learner` in a fresh process (`test_finetune.py::test_export_and_load_in_a_fresh_process`), the distributed runs (`test_distributed*.py`),
and each module's own bad-input tests.
"""
import re, warnings
import numpy as np, pandas as pd, pytest, torch
from fastai_imbalance.core import class_counts, class_weights, pos_weight, class_priors, imbalance_ratio
from fastai_imbalance.data import ResampledDL
from fastai_imbalance.priorshift import PriorShift, prior_shift_logits, em_priors, check_priors, calibrate
from fastai_imbalance.metrics import CohenKappa, BalancedAccuracy, MacroF1, RocAuc, AveragePrecision, SensitivityAtSpecificity
from fastai_imbalance.losses import FocalLoss, LogitAdjustedLoss, AsymmetricLoss, PosWeightBCELoss, ClassBalancedLoss
from fastai_imbalance.interpret import label_thresholds, OperatingThreshold
from test_data import dl_from_labels


def rdl(y, **kw): return dl_from_labels(np.asarray(y), **kw)  # a resampled loader over plain labels (no images)

def metric_value(m, p, y):
    m.reset(); m.update(torch.as_tensor(p), torch.as_tensor(y)); return m.value

Y10 = np.repeat(np.arange(10), [100, 60, 36, 22, 13, 8, 5, 3, 2, 1])  # digits_lt's training counts
NAN2 = torch.tensor([[0., 1.], [float('nan'), 0.]])

CASES = [
    # --- empty data, classes without items
    ('empty labels', lambda: class_counts([]), ValueError, "the data set is empty"),
    ('empty training split', lambda: rdl([]), ValueError, "the training split is empty: there is nothing to resample"),
    ('class with no training item, balanced', lambda: rdl([0, 0, 1, 1], vocab=['a', 'b', 'c'], strategy='balanced'), ValueError,
     "class ['c'] has no training items"),
    ('class with no item, inverse weights', lambda: class_weights(counts=[5, 0, 2]), ValueError, "class [1] has no training samples, so no weight is defined"),
    ('every class empty, priors', lambda: class_priors(counts=[0, 0]), ValueError, "every class has 0 items"),
    ('empty unlabelled set, EM', lambda: em_priors(torch.empty(0, 3), torch.full((3,), 1 / 3)), ValueError, "got shape (0, 3)"),
    # --- labels outside the vocab
    ('label names not in the vocab', lambda: class_counts(['a', 'b', 'z'], vocab=['a', 'b']), ValueError, "1 label(s) are not in the vocab, e.g. ['z']"),
    ('class index outside the vocab', lambda: class_counts([0, 1, 7], vocab=['a', 'b', 'c']), ValueError, "class indices must lie in [0, 3) for a vocab of 3 classes, found [7]"),
    ('metric target outside the classes', lambda: metric_value(BalancedAccuracy(), torch.eye(3), [0, 1, 5]), ValueError,
     "1 targets lie outside the model's 3 classes (e.g. 5)"),
    ('EM-calibration target outside the classes', lambda: calibrate(torch.randn(4, 3), torch.tensor([0, 1, 2, 3])), ValueError,
     "target 3 is outside the model's 3 classes"),
    # --- multilabel into single-label APIs, and the reverse
    ('multilabel targets into kappa', lambda: metric_value(CohenKappa(), torch.rand(4, 3), torch.ones(4, 3)), ValueError,
     "CohenKappa is single-label; got multilabel targets of shape (4, 3)"),
    ('multilabel targets into FocalLoss', lambda: FocalLoss()(torch.randn(4, 3), torch.ones(4, 3)), ValueError, "FocalLoss is single-label"),
    ('class indices into AsymmetricLoss', lambda: AsymmetricLoss()(torch.randn(4, 3), torch.tensor([0, 1, 2, 0])), ValueError,
     "AsymmetricLoss is multilabel: targets must be a 0/1 matrix shaped like the outputs (4, 3), got (4,)"),
    ('single-label data into pos_weight', lambda: pos_weight([0, 1, 1]), ValueError, "pos_weight is for multilabel targets; for single-label data use class_weights"),
    ('non-binary multilabel matrix', lambda: class_counts(np.array([[0, 2], [1, 0]])), ValueError, "must hold only 0 and 1, found [2]"),
    # --- weights, priors, counts: wrong length, negative, NaN, inf, all zero
    ('class_weights of the wrong length', lambda: rdl(Y10, class_weights=[1., 2., 3.]), ValueError, "class_weights has 3 entries but must have 10, one per class"),
    ('negative class weight', lambda: rdl(Y10, class_weights=[1.] * 9 + [-1.]), ValueError, "must be finite and >= 0, found [-1.0] at positions [9]"),
    ('NaN item weight', lambda: rdl([0, 1, 1], item_weights=[1., float('nan'), 1.]), ValueError, "found [nan] at positions [1]"),
    ('all-zero class weights', lambda: rdl(Y10, class_weights=[0.] * 10), ValueError, "are all zero: nothing could be drawn"),
    ('priors of the wrong length', lambda: check_priors([.5, .5], 3, 'target priors'), ValueError, "target priors has 2 entries but must have 3, one per class of the model"),
    ('priors that do not sum to 1', lambda: check_priors([.5, .6], 2, 'target priors'), ValueError, "target priors sum to 1.1, not 1"),
    ('negative prior', lambda: check_priors([1.5, -.5], 2, 'target priors'), ValueError, "must be finite and >= 0, found [-0.5] at positions [1]"),
    ('infinite prior', lambda: check_priors([float('inf'), 0.], 2, 'target priors'), ValueError, "found [inf] at positions [0]"),
    ('all-zero priors', lambda: check_priors([0., 0.], 2, 'target priors'), ValueError, "target priors are all zero"),
    ('negative count', lambda: class_weights(counts=[3, -1]), ValueError, "counts must be finite and >= 0, found [-1.0] at positions [1]"),
    ('NaN count', lambda: class_weights(counts=[3, float('nan')]), ValueError, "counts must be finite and >= 0, found [nan] at positions [1]"),
    ('loss counts of the wrong length', lambda: LogitAdjustedLoss(counts=[5, 3])(torch.randn(4, 3), torch.tensor([0, 1, 2, 0])), ValueError,
     "LogitAdjustedLoss: the class counts has 2 entries but the model outputs 3 classes"),
    ('a class with zero count in the logit-adjusted loss', lambda: LogitAdjustedLoss(counts=[5, 0, 3]), ValueError, "class ['1'] has none"),
    ('NaN focal alpha', lambda: FocalLoss(alpha=[1., float('nan')]), ValueError, "alpha must be finite and >= 0, found [nan] at positions [1]"),
    # --- sampling beyond what a class holds
    ('oversample beyond a class without replacement', lambda: rdl(Y10, strategy='oversample', replace=False), ValueError,
     "oversample asks for 100 draws of class 9 per epoch, but it has 1 item and sampling is without replacement"),
    ('undersample n_per_class beyond a class without replacement', lambda: rdl(Y10, strategy='undersample', n_per_class=5, replace=False), ValueError,
     "undersample asks for 5 draws of class 9 per epoch, but it has 1 item and sampling is without replacement: lower n_per_class"),
    ('explicit targets beyond a class without replacement', lambda: rdl(Y10, targets=[10] * 10, replace=False), ValueError,
     "asks for 10 draws of class"),
    # --- NaN / inf logits
    ('NaN predictions into a metric', lambda: metric_value(RocAuc(), NAN2, [0, 1]), ValueError, "1 predictions were"),
    ('NaN logits into PriorShift', lambda: prior_shift_logits(NAN2, torch.tensor([.5, .5]), torch.tensor([.9, .1])), ValueError,
     "logits contain NaN or inf (first at [1, 0]: nan)"),
    ('inf probabilities into EM', lambda: em_priors(torch.tensor([[float('inf'), 0.]]), torch.tensor([.5, .5])), ValueError,
     "probabilities contain NaN or inf"),
    ('NaN scores into label thresholds', lambda: label_thresholds(NAN2.sigmoid(), torch.tensor([[0, 1], [1, 0]])), ValueError,
     "must be finite and lie in [0, 1], found [nan]"),
    ('operating threshold of 1', lambda: OperatingThreshold(1.), ValueError, "threshold must lie strictly between 0 and 1, got 1.0"),
    ('no items for label thresholds', lambda: label_thresholds(torch.empty(0, 3), torch.empty(0, 3)), ValueError, "no items: thresholds need labelled predictions"),
]


@pytest.mark.parametrize('name,call,exc,msg', CASES, ids=[c[0] for c in CASES])
def test_bad_input(name, call, exc, msg):
    with warnings.catch_warnings():
        warnings.simplefilter('ignore')
        with pytest.raises(exc, match=re.escape(msg)): call()


def test_catalogue_size():
    assert len(CASES) >= 30


# --- documented behaviour on awkward but valid data

def test_class_with_one_image_is_drawn_evenly():
    dl = rdl(Y10, strategy='balanced')
    s = dl.sampling_summary()
    assert s.loc[9, 'items'] == 1 and s.loc[9, 'expected per epoch'] == pytest.approx(25.0)
    assert s.loc[9, 'repeats per item'] == pytest.approx(25.0)


def test_class_absent_from_valid_is_skipped_with_a_warning_or_raises():
    p, y = torch.tensor([[.8, .1, .1], [.2, .7, .1], [.6, .3, .1]]), torch.tensor([0, 1, 0])  # class 2 has no validation item
    with pytest.warns(UserWarning, match=re.escape("roc_auc: skipped class 2, which has no positive or no negative in the targets, which scikit-learn refuses to score (absent='skip')")):
        v = metric_value(RocAuc(), p, y)
    assert v == pytest.approx(1.0)  # averaged over classes 0 and 1 only, never a 0 for class 2
    with pytest.raises(ValueError, match=re.escape("roc_auc_absent_raise: class 2 has no positive or no negative in the targets, so the metric is undefined for it")):
        metric_value(RocAuc(absent='raise'), p, y)


def test_float16_predictions_score_as_float32():
    g = torch.Generator().manual_seed(0)
    p = torch.rand(500, 5, generator=g).softmax(1); y = torch.randint(0, 5, (500,), generator=g)
    for m in (RocAuc, AveragePrecision, BalancedAccuracy, CohenKappa):
        assert metric_value(m(activation=None), p.half(), y) == pytest.approx(metric_value(m(activation=None), p.half().float(), y), abs=1e-12)


def test_batch_larger_than_the_data_set_warns():
    with pytest.warns(UserWarning, match=re.escape("the resampled epoch has 5 items, fewer than one batch of 64: with drop_last=True")):
        ResampledDL(list(range(5)), labels=np.array([0, 0, 0, 1, 1]), bs=64, drop_last=True, num_workers=0)
    dl = rdl([0, 0, 0, 1, 1], bs=64)  # without drop_last: one short batch
    assert [len(b) for b in dl] == [5]


def test_imbalance_of_10000_to_1():
    y = np.r_[np.zeros(10_000, int), 1]
    assert imbalance_ratio(class_counts(y)) == 10_000
    w = class_weights(y)
    assert torch.isfinite(w).all() and float(w[1] / w[0]) == pytest.approx(10_000)
    dl = rdl(y, strategy='balanced', bs=256)
    drawn = np.bincount(y[dl.draw(np.random.default_rng(0))], minlength=2)
    assert drawn.tolist() == [5000, 5001] or abs(drawn[1] - 5000.5) < 1  # the one positive repeated ~5,000 times
    z = torch.randn(1000, 2)
    assert torch.isfinite(prior_shift_logits(z, torch.tensor([.5, .5]), class_priors(y).double())).all()


def test_same_seed_same_draw_and_metrics():
    a = rdl(Y10, strategy='sqrt').draw(np.random.default_rng(7))
    b = rdl(Y10, strategy='sqrt').draw(np.random.default_rng(7))
    assert (a == b).all() and not (a == rdl(Y10, strategy='sqrt').draw(np.random.default_rng(8))).all()
    g = torch.Generator().manual_seed(1)
    p = torch.rand(300, 10, generator=g); y = torch.randint(0, 10, (300,), generator=g)
    ms = lambda: [metric_value(m, p, y) for m in (CohenKappa(), MacroF1(), RocAuc(), SensitivityAtSpecificity(.9, pos=3))]
    assert ms() == ms()


def test_tensors_numpy_cannot_read_directly():
    "Weights, priors, counts and scores as tensors that `np.asarray` refuses (requiring grad here; on a GPU, CUDA tensors take the same path)"
    w = torch.tensor([1., 2., 3.], requires_grad=True)
    with pytest.raises((RuntimeError, TypeError)): np.asarray(w)  # what the library must not do with them
    l = FocalLoss(alpha=w)
    assert l.alpha.dtype == torch.float32 and not l.alpha.requires_grad and l.alpha.tolist() == [1., 2., 3.]
    assert torch.isfinite(l(torch.randn(4, 3), torch.tensor([0, 1, 2, 0]))).all()
    assert check_priors((w / w.sum()), 3).tolist() == pytest.approx([1 / 6, 2 / 6, 3 / 6])
    assert class_weights(counts=w).shape == (3,) and imbalance_ratio(torch.tensor([100, 0, 1])) == 100
    p = torch.rand(20, 2, requires_grad=True); y = torch.rand(20, 2) < .5
    assert label_thresholds(p, y).shape[0] == 2
    from fastai_imbalance.interpret import PerLabelThreshold
    assert PerLabelThreshold(torch.tensor([.3, .6], requires_grad=True)).thresholds.tolist() == pytest.approx([.3, .6])
    with pytest.raises(ValueError, match=re.escape("counts must be finite and >= 0, found [-1.0] at positions [1]")):
        imbalance_ratio(pd.Series([3, -1]))  # a negative count used to be dropped silently
