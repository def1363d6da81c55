"""Metrics against scikit-learn and imbalanced-learn, property-tested on the inputs that break naive versions: classes predicted but absent,
one class present, ties, float16, empty label rows, a label positive everywhere, sample weights, batch boundaries anywhere; binned error bounds;
fastai's argument names and column names; shared work; bad input."""
import inspect, pickle, re, warnings
from types import SimpleNamespace
import numpy as np, pytest, torch
from hypothesis import given, settings, strategies as st, HealthCheck
from sklearn import metrics as skm
from imblearn.metrics import geometric_mean_score
from fastai_imbalance.metrics import (CohenKappa, BalancedAccuracy, MacroF1, GMean, RocAuc, AveragePrecision, SensitivityAtSpecificity,
                                      SpecificityAtSensitivity, ConfusionMetric, exact_curve_sums, binned_curve_sums, class_report, confusion_counts)

pytestmark = [pytest.mark.filterwarnings('ignore:.*(skipped class|is predicted but absent|has no item in the targets|is undefined|appears in neither|no item has its target).*'),
              pytest.mark.filterwarnings('ignore::sklearn.exceptions.UndefinedMetricWarning'),
              pytest.mark.filterwarnings('ignore:.*(y_pred contains classes|No positive class|Only one class|labels size).*')]


def run(m, pred, targ, bs, w=None):
    "Stream `pred`, `targ` (and weights `w`) through metric `m` in batches of `bs`"
    m.reset()
    for i in range(0, len(targ), bs): m.update(pred[i:i + bs], targ[i:i + bs], None if w is None else w[i:i + bs])
    return m.value

def close(a, b, tol=1e-9): return (np.isnan(a) and np.isnan(b)) or a == b or abs(a - b) <= tol


@st.composite
def single_label(draw, min_c=2, max_c=6):
    "Targets, logits with many ties, a batch size, maybe weights; classes may be absent from the targets yet predicted, or one class alone present"
    n, C = draw(st.integers(1, 80)), draw(st.integers(min_c, max_c))
    g = np.random.default_rng(draw(st.integers(0, 2**31)))
    y = g.integers(0, C, n)
    case = draw(st.sampled_from(['plain', 'absent', 'one class']))
    if case == 'absent': y[y == C - 1] = 0   # class C-1 never a target, but may be predicted
    if case == 'one class': y[:] = g.integers(0, C)
    z = g.integers(0, draw(st.integers(2, 8)), (n, C)).astype(np.float32) / 2  # coarse logits: ties everywhere
    if draw(st.booleans()): z[:, C - 1] += 1.5  # over-predict a class
    half = draw(st.booleans())
    w = g.random(n) if draw(st.booleans()) else None
    if w is not None and draw(st.booleans()): w[g.random(n) < .3] = 0.  # zero weights: a class seen only with weight 0 is still present
    if w is not None and w.sum() == 0: w[0] = 1.  # all zero: refused (as scikit-learn does)
    return torch.tensor(z).half() if half else torch.tensor(z), torch.tensor(y), draw(st.integers(1, n)), w

hyp = settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@hyp
@given(single_label())
def test_counting_metrics_equal_the_references(d):
    z, y, bs, w = d
    yp = z.float().argmax(1).numpy()  # argmax of logits = argmax of the softmax (first maximum on ties, as torch)
    C = z.shape[1]
    sw = None if w is None else torch.tensor(w)
    kw = dict(sample_weight=w)
    if w is None or w.sum() > 0:  # scikit-learn divides by the total weight
        assert close(run(BalancedAccuracy(), z, y, bs, sw), skm.balanced_accuracy_score(y, yp, **kw))
        with np.errstate(divide='ignore', invalid='ignore'):
            assert close(run(BalancedAccuracy(adjusted=True), z, y, bs, sw), skm.balanced_accuracy_score(y, yp, adjusted=True, **kw))  # one class: -inf or nan, as scikit-learn
    assert close(run(MacroF1(), z, y, bs, sw), skm.f1_score(y, yp, average='macro', **kw))
    assert close(run(GMean(), z, y, bs, sw), geometric_mean_score(y, yp, **kw))
    assert close(run(GMean(correction=0.01), z, y, bs, sw), geometric_mean_score(y, yp, correction=0.01, **kw))
    labels = [c for c in range(C) if c % 2 == 0]  # chosen classes, whether present or not
    assert close(run(MacroF1(labels=labels), z, y, bs, sw), skm.f1_score(y, yp, labels=labels, average='macro', **kw))
    assert close(run(GMean(labels=labels), z, y, bs, sw), geometric_mean_score(y, yp, labels=labels, **kw))
    for wt in (None, 'linear', 'quadratic'):
        ref = skm.cohen_kappa_score(y, yp, weights=wt, labels=list(range(C)), **kw)  # grades: the class indices
        assert close(run(CohenKappa(weights=wt), z, y, bs, sw), ref)
        present = sorted(set(y.tolist()) | set(yp.tolist()))
        if present == list(range(present[0], present[-1] + 1)) or wt is None:  # no grade missing in between: scikit-learn's default agrees
            assert close(run(CohenKappa(weights=wt), z, y, bs, sw), skm.cohen_kappa_score(y, yp, weights=wt, **kw))
        if set(labels) & set(y.tolist()):
            assert close(run(CohenKappa(weights=wt, labels=labels), z, y, bs, sw), skm.cohen_kappa_score(y, yp, weights=wt, labels=labels, **kw))


def test_the_issue_case_and_its_warnings():
    y, yp = torch.tensor([0, 0, 1, 1, 3, 3]), torch.tensor([0, 2, 1, 1, 3, 0])
    z = torch.eye(4)[yp] * 3
    with pytest.warns(UserWarning, match=r"macro_f1: class 2 is predicted but absent from the targets: its F1 is 0"):
        assert run(MacroF1(), z, y, 4) == pytest.approx(0.5416666666666666, abs=1e-12)  # scikit-learn; the old definition gave 0.722
    with pytest.warns(UserWarning, match=r"g_mean: class 2 has no item in the targets: its recall counts as 0"):
        assert run(GMean(), z, y, 4) == 0.  # imbalanced-learn; the old definition gave 0.630
    assert run(MacroF1(labels=[0, 1, 3]), z, y, 4) == pytest.approx(skm.f1_score(y, yp, labels=[0, 1, 3], average='macro'))
    # weighted kappa: the class indices are the grades; scikit-learn's default renumbers the grades present, and the warning names its labels
    y2, p2 = torch.tensor([0, 1, 3, 3, 1, 0, 0]), torch.tensor([0, 1, 3, 1, 0, 3, 1])
    with pytest.warns(UserWarning, match=re.escape("grade 2 appears in neither the targets nor the predictions") + ".*labels=\\[0, 1, 3\\]"):
        v = run(CohenKappa(weights='linear'), torch.eye(4)[p2], y2, 3)
    assert v == pytest.approx(skm.cohen_kappa_score(y2, p2, weights='linear', labels=[0, 1, 2, 3]))
    assert run(CohenKappa(weights='linear', labels=[0, 1, 3]), torch.eye(4)[p2], y2, 3) == pytest.approx(skm.cohen_kappa_score(y2, p2, weights='linear'))


@st.composite
def multilabel(draw):
    "Multilabel targets with empty rows, labels never positive and labels positive everywhere; probabilities with ties; weights"
    n, k = draw(st.integers(2, 60)), draw(st.integers(2, 7))  # scikit-learn reads a single column as binary, not multilabel
    g = np.random.default_rng(draw(st.integers(0, 2**31)))
    Y = (g.random((n, k)) < g.uniform(.05, .7, k)).astype(np.float32)
    if k > 1 and draw(st.booleans()): Y[:, 0] = 0      # a label with no positive
    if k > 2 and draw(st.booleans()): Y[:, 1] = 1      # a label positive on every item
    if draw(st.booleans()): Y[: n // 3] = 0            # empty label rows
    S = (g.integers(0, 9, (n, k)) / 8.).astype(np.float32)
    w = g.random(n) if draw(st.booleans()) else None
    return torch.tensor(Y), torch.tensor(S), draw(st.integers(1, n)), w


@hyp
@given(multilabel())
def test_multilabel_metrics_equal_scikit_learn(d):
    Y, S, bs, w = d
    n, k = Y.shape
    sw = None if w is None else torch.tensor(w)
    kw = dict(sample_weight=w)
    # macro-F1 over every label, a label with no positive and no prediction counting 0 (zero_division='warn'), as scikit-learn
    for t in (0.5, 0.3):
        assert close(run(MacroF1(activation=None, threshold=t), S, Y, bs, sw), skm.f1_score(Y, S > t, average='macro', **kw))
    assert close(run(MacroF1(activation=None, zero_division=np.nan), S, Y, bs, sw), skm.f1_score(Y, S > .5, average='macro', zero_division=np.nan, **kw))
    # AP: defined wherever a label has positives (1.0 for a label positive on every item), as scikit-learn
    has_pos = [j for j in range(k) if Y[:, j].sum() > 0 and (w is None or (w * Y[:, j].numpy()).sum() > 0)]
    if has_pos:
        ap = [skm.average_precision_score(Y[:, j], S[:, j], sample_weight=w) for j in has_pos]
        assert close(run(AveragePrecision(activation=None), S, Y, bs, sw), np.mean(ap))
        if len(has_pos) == k: assert close(run(AveragePrecision(activation=None), S, Y, bs, sw), skm.average_precision_score(Y, S, average='macro', **kw))
    both = [j for j in range(k) if 0 < Y[:, j].sum() < n]
    if both and w is None:
        assert close(run(RocAuc(activation=None), S, Y, bs), np.mean([skm.roc_auc_score(Y[:, j], S[:, j]) for j in both]))
        npos = np.array([Y[:, j].sum() for j in both])
        assert close(run(RocAuc(average='weighted', activation=None), S, Y, bs), (np.array([skm.roc_auc_score(Y[:, j], S[:, j]) for j in both]) * npos).sum() / npos.sum())
    if 0 < Y.sum() < Y.numel():
        assert close(run(RocAuc(average='micro', activation=None), S, Y, bs, sw), skm.roc_auc_score(Y.ravel(), S.ravel(), sample_weight=None if w is None else np.repeat(w, k)))
        assert close(run(AveragePrecision(average='micro', activation=None), S, Y, bs, sw), skm.average_precision_score(Y, S, average='micro', **kw))


def test_multilabel_label_positive_everywhere_counts_like_scikit_learn():
    Y = torch.tensor([[1., 0, 1], [1, 0, 0], [1, 1, 0], [1, 0, 1]])
    S = torch.tensor([[.2, .5, .9], [.4, .1, .3], [.9, .8, .2], [.3, .2, .6]])
    assert run(AveragePrecision(activation=None), S, Y, 2) == pytest.approx(skm.average_precision_score(Y, S, average='macro'))
    with pytest.warns(UserWarning, match="roc_auc: skipped class 0, which has no positive or no negative"):
        v = run(RocAuc(activation=None), S, Y, 2)  # scikit-learn raises here
    assert v == pytest.approx(np.mean([skm.roc_auc_score(Y[:, j], S[:, j]) for j in (1, 2)]))
    Y[:, 1] = 0  # no positive: skipped with a warning that says what scikit-learn would do
    with pytest.warns(UserWarning, match=re.escape("average_precision: skipped class 1, which has no positive in the targets (scikit-learn's average_precision_score would score it 0)")):
        run(AveragePrecision(activation=None), S, Y, 2)
    # a label with no positive but a false positive: F1 0, as scikit-learn (the old definition skipped it: 0.833)
    Yf, Pf = torch.tensor([[1., 0], [1, 0], [0, 0]]), torch.tensor([[1., 1], [1, 0], [0, 0]])
    assert run(MacroF1(activation=None), Pf, Yf, 2) == pytest.approx(skm.f1_score(Yf, Pf, average='macro'))


@hyp
@given(single_label(min_c=3))
def test_ranking_metrics_equal_scikit_learn_multiclass(d):
    z, y, bs, w = d
    p = z.float().softmax(1)
    if z.dtype == torch.float16: p = p.half()  # float16 scores, compared on the same values
    pn = p.float().numpy()
    C = p.shape[1]
    sw = None if w is None else torch.tensor(w)
    Yo = np.eye(C)[y.numpy()]
    ww = np.ones(len(y)) if w is None else w
    ok = [c for c in range(C) if (Yo[:, c] * ww).sum() > 0 and ((1 - Yo[:, c]) * ww).sum() > 0]  # positives and negatives of non-zero weight
    if not ok: return
    auc = [skm.roc_auc_score(Yo[:, c], pn[:, c], sample_weight=w) for c in ok]
    assert close(run(RocAuc(activation=None), p, y, bs, sw), np.mean(auc))
    npos = np.array([(Yo[:, c] * (1 if w is None else w)).sum() for c in ok])
    assert close(run(RocAuc(average='weighted', activation=None), p, y, bs, sw), (np.array(auc) * npos).sum() / npos.sum())
    aps = [c for c in range(C) if (Yo[:, c] * ww).sum() > 0]
    assert close(run(AveragePrecision(activation=None), p, y, bs, sw), np.mean([skm.average_precision_score(Yo[:, c], pn[:, c], sample_weight=w) for c in aps]))
    if len(ok) == C and len(aps) == C and not z.dtype == torch.float16:  # scikit-learn's multiclass scores need every class present, rows summing to 1
        assert close(run(RocAuc(activation=None), p, y, bs, sw), skm.roc_auc_score(y, pn, multi_class='ovr', sample_weight=w))
        assert close(run(RocAuc(average='micro', activation=None), p, y, bs, sw), skm.roc_auc_score(y, pn, multi_class='ovr', average='micro', sample_weight=w))
        assert close(run(AveragePrecision(activation=None), p, y, bs, sw), skm.average_precision_score(Yo, pn, sample_weight=w))
        assert close(run(AveragePrecision(average='micro', activation=None), p, y, bs, sw), skm.average_precision_score(Yo, pn, average='micro', sample_weight=w))
        assert close(run(AveragePrecision(average='weighted', activation=None), p, y, bs, sw), skm.average_precision_score(Yo, pn, average='weighted', sample_weight=w))
        if w is None:
            assert close(run(RocAuc(multi_class='ovo', activation=None), p, y, bs), skm.roc_auc_score(y, pn, multi_class='ovo'))
            assert close(run(RocAuc(multi_class='ovo', average='weighted', activation=None), p, y, bs), skm.roc_auc_score(y, pn, multi_class='ovo', average='weighted'))


@hyp
@given(st.integers(2, 120), st.integers(0, 2**31), st.integers(1, 50), st.floats(0.05, 0.95), st.booleans(), st.sampled_from([None, .05, .3, 1.]))
def test_binary_metrics_operating_points_and_partial_auc(n, seed, bs, q, weighted, max_fpr):
    g = np.random.default_rng(seed)
    y = torch.tensor(g.random(n) < q).long()
    s = torch.tensor(g.integers(0, 12, n) / 11.)  # probabilities with ties
    if y.sum() in (0, n): return
    w = g.random(n) if weighted else None
    sw = None if w is None else torch.tensor(w)
    fpr, tpr, _ = skm.roc_curve(y, s, drop_intermediate=False, sample_weight=w)
    for pred in (s, torch.stack([1 - s, s], 1)):  # one sigmoid column, or two softmax columns
        assert close(run(RocAuc(activation=None, max_fpr=max_fpr), pred, y, bs, sw), skm.roc_auc_score(y, s, max_fpr=max_fpr, sample_weight=w))
        assert close(run(AveragePrecision(activation=None), pred, y, bs, sw), skm.average_precision_score(y, s, sample_weight=w))
        for spec in (0.5, 0.9, 1.):
            assert close(run(SensitivityAtSpecificity(spec, activation=None), pred, y, bs, sw), tpr[fpr <= 1 - spec + 1e-12].max())
        for sens in (0.5, 0.9):
            assert close(run(SpecificityAtSensitivity(sens, activation=None), pred, y, bs, sw), (1 - fpr[tpr >= sens - 1e-12]).max())
    # the negative class as the positive one
    assert close(run(RocAuc(activation=None, pos=0), torch.stack([1 - s, s], 1), y, bs), skm.roc_auc_score(1 - y, 1 - s))


@hyp
@given(single_label(min_c=2, max_c=5), st.sampled_from([3, 16, 200]))
def test_binned_metrics_stay_within_their_bounds(d, T):
    z, y, bs, w = d
    sw = None if w is None else torch.tensor(w)
    for cls, kw in ((RocAuc, {}), (AveragePrecision, {}), (SensitivityAtSpecificity, dict(spec=.7)), (SpecificityAtSensitivity, dict(sens=.6)),
                    (RocAuc, dict(average='weighted')), (RocAuc, dict(average='micro'))):
        e = run(cls(activation='softmax', **kw), z, y, bs, sw)  # logits by hand: coarse ones can look like probabilities (rows of 0.5, 0.5)
        m = cls(thresholds=T, activation='softmax', **kw)
        b = run(m, z, y, bs, sw)
        assert (np.isnan(e) and np.isnan(b)) or abs(e - b) <= m.error_bound + 1e-9, (cls.__name__, kw, e, b, m.error_bound)


def test_binned_close_to_exact_at_many_bins():
    g = torch.Generator().manual_seed(0)
    n, C = 4000, 50
    y = torch.randint(0, C, (n,), generator=g)
    z = torch.randn(n, C, generator=g) * 2; z[torch.arange(n), y] += 2.
    for cls in (RocAuc, AveragePrecision):
        exact, binned = cls(), cls(thresholds=1000)
        e, b = run(exact, z, y, 256), run(binned, z, y, 256)
        assert abs(e - b) <= binned.error_bound and binned.error_bound < 0.01 and abs(e - b) < 1e-3, (cls.__name__, e, b, binned.error_bound)
    # the AUC bound holds class by class, from histograms built by hand
    p = z.softmax(1)
    ex = exact_curve_sums(p, y)
    from fastai_imbalance.metrics import _bin, n_bins
    bins = _bin(p, 1000).long()
    hist = torch.zeros(2, C, n_bins(1000))
    pos = torch.nn.functional.one_hot(y, C).bool()
    for c in range(C):
        hist[1, c].index_add_(0, bins[pos[:, c], c], torch.ones(int(pos[:, c].sum())))
        hist[0, c].index_add_(0, bins[~pos[:, c], c], torch.ones(int((~pos[:, c]).sum())))
    bs = binned_curve_sums(hist)
    assert ((bs['auc'] - ex['auc']).abs() <= bs['auc_bound'] + 1e-12).all() and ((bs['ap'] - ex['ap']).abs() <= bs['ap_bound'] + 1e-12).all()


def test_ap_bound_is_an_ap_bound():
    "The adversarial case: every score in one bin. The AUC's bound says nothing about AP; AP's own bound covers the truth"
    y = torch.tensor([0] * 50 + [1] * 50)
    s = torch.cat([torch.full((50,), .5001), .5 - torch.arange(50) * 1e-6])  # negatives above distinct positives, inside one bin
    exact, binned = AveragePrecision(activation=None), AveragePrecision(activation=None, thresholds=4)
    e, b = run(exact, s, y, 30), run(binned, s, y, 30)
    assert abs(e - b) > 0.1 and abs(e - b) <= binned.error_bound


def test_bins_are_monotone_in_the_probability():
    from fastai_imbalance.metrics import _bin, n_bins
    p = torch.cat([torch.tensor([0., 1e-45, 1e-30, 2.**-64, 2.**-24, 1e-6, .25, .5, .5000001, .75, 1 - 1e-6, 1 - 2.**-24, 1.]), torch.rand(10000), torch.rand(1000) ** 30]).sort().values
    for T in (2, 7, 1000, 4096):
        b, nb = _bin(p, T), n_bins(T)
        assert T <= nb < 2 * T + 2 and (b[1:] >= b[:-1]).all() and b[0] == 0 and b[-1] == nb - 1
        assert len(b.unique()) > min(T, 100) / 2  # the bins are used, not collapsed
        if T >= 1000: assert b[p > 1e-18].min() > 0 and (b[(p > 1e-19) & (p < 1e-10)].unique().numel() > 20)  # tiny softmax probabilities keep their order


def test_activation_follows_the_loss():
    from fastai_imbalance.losses import SoftmaxMultilabelLoss
    g = torch.Generator().manual_seed(0)
    z, Y = torch.randn(64, 6, generator=g), (torch.rand(64, 6, generator=g) < .3).float()
    lf = SoftmaxMultilabelLoss(k=2)
    lrn = SimpleNamespace(pred=z, yb=(Y,), dl=None, loss_func=lf, metrics=[])
    ap = AveragePrecision(); ap.accumulate(lrn)
    ref = AveragePrecision(activation=None); ref.update(z.softmax(1), Y)
    assert ap.value == pytest.approx(ref.value, abs=1e-12)
    f1 = MacroF1(); f1.accumulate(lrn)  # decisions from the loss's decodes: the top 2 labels of each item
    assert f1.value == pytest.approx(skm.f1_score(Y, lf.decodes(lf.activation(z)), average='macro', zero_division=0), abs=1e-12)
    sig = AveragePrecision(); sig.update(z, Y)  # by hand, without a loss: sigmoid for multilabel targets
    assert sig.value == pytest.approx(skm.average_precision_score(Y, torch.sigmoid(z)), abs=1e-9)


def test_absent_policy():
    z = torch.randn(20, 4); y = torch.tensor([0, 1, 2] * 6 + [0, 1])  # class 3 never in the targets
    with pytest.warns(UserWarning, match=r"roc_auc: skipped class 3, which has no positive"):
        v = run(RocAuc(), z, y, 8)
    assert not np.isnan(v)
    assert np.isnan(run(RocAuc(absent='nan'), z, y, 8))
    with pytest.raises(ValueError, match=r"roc_auc_absent_raise: class 3 has no positive"): run(RocAuc(absent='raise'), z, y, 8)
    m = BalancedAccuracy(); m.vocab = ['cat', 'dog', 'eel', 'yak']
    with pytest.warns(UserWarning, match="balanced_accuracy: skipped class yak, absent from the targets"): run(m, z, y, 8)
    with warnings.catch_warnings(record=True) as w:  # one warning per metric, not one per read
        warnings.simplefilter('always')
        m.value; m.value
    assert not [x for x in w if 'skipped' in str(x.message)]


def test_single_class_batches_and_batch_boundaries():
    y = torch.tensor([0] * 10 + [1] * 10 + [2] * 10)
    z = torch.randn(30, 3)
    for m in (RocAuc(), AveragePrecision(), MacroF1(), CohenKappa(), GMean(), RocAuc(thresholds=64)):
        vals = [run(m, z, y, bs) for bs in (1, 7, 10, 30)]  # every batch of 10 holds one class only
        assert max(vals) - min(vals) < 1e-12


def test_segmentation_outputs_with_a_class_axis():
    "fastai's `axis`: (n, C, h, w) outputs and (n, h, w) targets score like their flattened pixels"
    g = torch.Generator().manual_seed(0)
    z, y = torch.randn(4, 3, 5, 6, generator=g), torch.randint(0, 3, (4, 5, 6), generator=g)
    zf, yf = z.movedim(1, -1).reshape(-1, 3), y.reshape(-1)
    for cls in (BalancedAccuracy, MacroF1, CohenKappa, RocAuc, AveragePrecision):
        assert run(cls(axis=1), z, y, 2) == pytest.approx(run(cls(), zf, yf, 17), abs=1e-12)


def test_class_report_and_counts():
    m = MacroF1()
    y = torch.tensor([0, 0, 0, 1, 1, 2]); z = torch.eye(3)[[0, 0, 1, 1, 1, 2]] * 5
    run(m, z, y, 6)
    df = class_report(m.counts, vocab=['a', 'b', 'c'], train_counts=[10, 100, 1])
    assert list(df.index) == ['b', 'a', 'c'] and df.loc['a', 'recall'] == pytest.approx(2 / 3) and df.loc['b', 'precision'] == pytest.approx(2 / 3)
    assert list(m.per_class().support) == [3, 2, 1]
    cm = skm.confusion_matrix(y, z.argmax(1))
    assert torch.equal(confusion_counts(cm), m.counts)


def test_state_is_linear_in_the_classes():
    C = 5000
    y = torch.randint(0, C, (512,)); z = torch.randn(512, C)
    for m in (BalancedAccuracy(), MacroF1(), GMean(), CohenKappa(weights='quadratic')):
        run(m, z, y, 128)
        assert m.state.numel() == 5 * C + 2  # five counts per class and two sums: 200 KB, not a 200 MB matrix
    from fastai_imbalance.metrics import n_bins
    h = RocAuc(thresholds=100); run(h, z, y, 128)
    assert h.state.h.numel() == 2 * C * n_bins(100)


def test_pickled_metrics_carry_no_state():
    m = RocAuc(); run(m, torch.randn(100, 5), torch.randint(0, 5, (100,)), 10)
    m2 = pickle.loads(pickle.dumps(m))
    assert m2.state is None and m2.value is None and len(pickle.dumps(m)) < 2000
    assert run(m2, torch.randn(50, 5), torch.randint(0, 5, (50,)), 10) is not None


def test_sibling_metrics_share_the_batches_and_the_ranking(monkeypatch):
    from fastai_imbalance import metrics as M
    g = torch.Generator().manual_seed(0)
    auc, ap, ba, f1 = RocAuc(), AveragePrecision(), BalancedAccuracy(), MacroF1()
    lrn = SimpleNamespace(dl=None, loss_func=None, metrics=[auc, ap, ba, f1])
    for _ in range(4):
        lrn.pred, lrn.yb = torch.randn(32, 7, generator=g), (torch.randint(0, 7, (32,), generator=g),)
        for m in lrn.metrics: m.accumulate(lrn)
    assert auc.state is ap.state and auc.state.n == 128  # one copy of the scores
    calls = []
    orig = M._ranked_sums
    monkeypatch.setattr(M, '_ranked_sums', lambda *a, **k: calls.append(1) or orig(*a, **k))
    auc.value, ap.value
    assert len(calls) == 1  # ranked once for both
    S, y = auc.state.S[:128], auc.state.P[:128]
    assert auc.value == pytest.approx(skm.roc_auc_score(y, S, multi_class='ovr'), abs=1e-12)
    assert ap.value == pytest.approx(skm.average_precision_score(np.eye(7)[y], S), abs=1e-12)


def test_fastai_signatures_are_a_subset_of_ours():
    import fastai.metrics as fm
    from fastai_imbalance.losses import FocalLoss
    import fastai.losses as fl
    for ours, theirs in ((RocAuc, fm.RocAuc), (CohenKappa, fm.CohenKappa), (BalancedAccuracy, fm.BalancedAccuracy), (FocalLoss, fl.FocalLoss)):
        p_theirs = [p for p in inspect.signature(theirs).parameters.values() if p.name != 'self']
        p_ours = [p for p in inspect.signature(ours).parameters.values() if p.name != 'self']
        assert [p.name for p in p_ours[:len(p_theirs)]] == [p.name for p in p_theirs], (ours.__name__, p_theirs, p_ours)  # same names, same positions
        assert all(p_ours[i].default == p.default for i, p in enumerate(p_theirs)), ours.__name__


def _stream(m, Z, Y, bs=17):
    "Feed a fastai or fastai_imbalance metric through `accumulate`, as a Learner does"
    from fastai.torch_core import to_detach
    m.reset()
    for i in range(0, len(Y), bs):
        m.accumulate(SimpleNamespace(pred=Z[i:i + bs], y=Y[i:i + bs], yb=(Y[i:i + bs],), dl=None, to_detach=to_detach, metrics=[]))
    return m.value


@pytest.mark.parametrize('kw', [dict(), dict(weights='quadratic'), dict(weights='linear', labels=[0, 1, 2, 3, 4]), dict(sample_weight='w')])
def test_cohen_kappa_equals_fastais(kw):
    import fastai.metrics as fm
    g = torch.Generator().manual_seed(1)
    y = torch.randint(0, 5, (300,), generator=g); z = torch.randn(300, 5, generator=g); z[torch.arange(300), y] += 1
    kw = {k: (torch.rand(300, generator=g).numpy() if v == 'w' else v) for k, v in kw.items()}
    assert _stream(CohenKappa(**kw), z, y) == pytest.approx(_stream(fm.CohenKappa(**kw), z, y), abs=1e-12)


@pytest.mark.parametrize('kw', [dict(), dict(adjusted=True), dict(sample_weight='w')])
def test_balanced_accuracy_equals_fastais(kw):
    import fastai.metrics as fm
    g = torch.Generator().manual_seed(2)
    y = torch.randint(0, 4, (300,), generator=g); z = torch.randn(300, 4, generator=g); z[torch.arange(300), y] += 1
    kw = {k: (torch.rand(300, generator=g).numpy() if v == 'w' else v) for k, v in kw.items()}
    assert _stream(BalancedAccuracy(**kw), z, y) == pytest.approx(_stream(fm.BalancedAccuracy(**kw), z, y), abs=1e-12)


@pytest.mark.parametrize('kw', [dict(), dict(average='weighted'), dict(multi_class='ovo'), dict(multi_class='ovo', average='weighted'), dict(sample_weight='w')])
def test_roc_auc_equals_fastais(kw):
    import fastai.metrics as fm
    g = torch.Generator().manual_seed(3)
    y = torch.randint(0, 4, (300,), generator=g); z = torch.randn(300, 4, generator=g); z[torch.arange(300), y] += 1
    kw = {k: (torch.rand(300, generator=g).numpy() if v == 'w' else v) for k, v in kw.items()}
    assert _stream(RocAuc(**kw), z, y) == pytest.approx(_stream(fm.RocAuc(**kw), z, y), abs=1e-12)
    yb = (y == 0).long(); zb = torch.stack([z[:, 1], z[:, 0]], 1)
    if 'multi_class' not in kw:  # RocAucBinary: the last softmax column against the rest; partial AUC too
        assert _stream(RocAuc(**kw), zb, yb) == pytest.approx(_stream(fm.RocAucBinary(**kw), zb, yb), abs=1e-12)
        assert _stream(RocAuc(max_fpr=.2, **kw), zb, yb) == pytest.approx(_stream(fm.RocAucBinary(max_fpr=.2, **kw), zb, yb), abs=1e-12)


def test_column_names_carry_the_settings():
    ms = [RocAuc(), RocAuc(average='weighted'), RocAuc(multi_class='ovo'), RocAuc(thresholds=1000), RocAuc(max_fpr=.1), RocAuc(pos=0),
          AveragePrecision(), AveragePrecision(average='micro'), SensitivityAtSpecificity(.9), SensitivityAtSpecificity(.95), SpecificityAtSensitivity(.8),
          CohenKappa(), CohenKappa(weights='linear'), CohenKappa(weights='quadratic'), BalancedAccuracy(), BalancedAccuracy(adjusted=True),
          MacroF1(), MacroF1(threshold=.3), MacroF1(labels=[0, 1]), GMean(), GMean(correction=.001), RocAuc(sample_weight=[1., 2.])]
    names = [m.name for m in ms]
    assert len(set(names)) == len(names), names
    assert names[:4] == ['roc_auc', 'roc_auc_weighted', 'roc_auc_ovo', 'roc_auc_binned_1000']
    assert 'sensitivity_at_specificity_0.95' in names and RocAuc(name='auc').name == 'auc'


def test_fastai_monitor_names_keep_working(lt_path):
    "SaveModelCallback/EarlyStoppingCallback written for fastai's column names track ours; an unknown column fails with the list of columns"
    from fastai.vision.all import ImageDataLoaders, vision_learner, set_seed, SaveModelCallback, EarlyStoppingCallback
    from conftest import tiny_arch
    set_seed(0)
    dls = ImageDataLoaders.from_folder(lt_path, valid='valid', bs=64, num_workers=0)
    learn = vision_learner(dls, tiny_arch, pretrained=False, metrics=[RocAuc(), CohenKappa(weights='quadratic')])
    save = SaveModelCallback(monitor='roc_auc_score', fname='m')
    with learn.no_bar(), learn.no_logging():
        learn.fit(2, cbs=[save, EarlyStoppingCallback(monitor='cohen_kappa_score', patience=5)])
    vals = [v[2] for v in learn.recorder.values]  # the roc_auc column
    assert save.best == pytest.approx(max(vals)) and save.monitor == 'roc_auc_score'
    with pytest.raises(ValueError, match=re.escape("SaveModelCallback(monitor='balanced_accuracy_score'): no such column; this learner logs")):
        with learn.no_bar(), learn.no_logging(): learn.fit(1, cbs=SaveModelCallback(monitor='balanced_accuracy_score'))
    learn.metrics = [RocAuc(), RocAuc(thresholds=100)]
    with pytest.raises(ValueError, match=re.escape("(fastai_imbalance's RocAuc logs as ['roc_auc', 'roc_auc_binned_100'])")):
        with learn.no_bar(), learn.no_logging(): learn.fit(1, cbs=SaveModelCallback(monitor='roc_auc_score'))


@pytest.mark.parametrize('call,err,msg', [
    (lambda: RocAuc(average='samples'), ValueError, "unknown average 'samples'"),
    (lambda: RocAuc('weighted'), TypeError, "axis must be an int (the class axis, as in fastai's metrics), got 'weighted'"),
    (lambda: RocAuc(multi_class='ovo', thresholds=100), ValueError, "multi_class='ovo' is RocAuc's, in exact mode"),
    (lambda: AveragePrecision(multi_class='ovo'), ValueError, "multi_class='ovo' is RocAuc's"),
    (lambda: RocAuc(multi_class='ovo', sample_weight=[1.]), ValueError, "without sample_weight or max_fpr (as scikit-learn)"),
    (lambda: RocAuc(max_fpr=0), ValueError, "max_fpr must lie in (0, 1]"),
    (lambda: RocAuc(thresholds=1), ValueError, "thresholds must be an integer >= 2"),
    (lambda: SensitivityAtSpecificity(1.5), ValueError, "spec must lie in [0, 1], got 1.5"),
    (lambda: CohenKappa(weights='cubic'), ValueError, "unknown weights 'cubic'"),
    (lambda: RocAuc(absent='zero'), ValueError, "unknown absent policy 'zero'"),
    (lambda: MacroF1(activation='relu'), ValueError, "unknown activation 'relu'"),
    (lambda: MacroF1(zero_division=2), ValueError, "zero_division must be 'warn', 0, 1 or np.nan, got 2"),
    (lambda: MacroF1(labels=[]), ValueError, "labels is empty"),
    (lambda: RocAuc(sample_weight=[1., -1.]), ValueError, "sample_weight must be finite and >= 0, found [-1.0] at positions [1]"),
    (lambda: RocAuc(sample_weight=[0., 0.]), ValueError, "sample_weight is all zero: every scored item would weigh nothing"),
    (lambda: run(RocAuc(), torch.tensor([[0., float('nan'), 1.]] * 4), torch.tensor([0, 1, 2, 0]), 2), ValueError, "roc_auc: 4 predictions were NaN or inf"),
    (lambda: run(CohenKappa(), torch.zeros(4, 3), torch.tensor([0, 1, 7, 2]), 2), ValueError, "1 targets lie outside the model's 3 classes (e.g. 7)"),
    (lambda: run(BalancedAccuracy(), torch.zeros(4, 3), torch.zeros(4, 3), 2), ValueError, "BalancedAccuracy is single-label; got multilabel targets"),
    (lambda: run(RocAuc(multi_class='ovo'), torch.zeros(4, 3), torch.zeros(4, 3), 2), ValueError, "multi_class='ovo' needs multiclass"),
    (lambda: run(RocAuc(multi_class='raise'), torch.zeros(4, 3), torch.tensor([0, 1, 2, 0]), 2), ValueError, "multi_class='raise', but the model outputs 3 classes"),
    (lambda: run(RocAuc(max_fpr=.5), torch.zeros(4, 3), torch.tensor([0, 1, 2, 0]), 2), ValueError, "partial AUC (max_fpr) is not available for multiclass outputs"),
    (lambda: run(RocAuc(), torch.zeros(4, 3), torch.zeros(3), 2), ValueError, "2 predictions for 1 targets"),
    (lambda: run(RocAuc(), torch.zeros(4, 3), torch.zeros(4, 2), 2), ValueError, "targets of shape (2, 2) fit neither"),
    (lambda: run(RocAuc(thresholds=10, activation=None), torch.full((4, 3), 2.), torch.tensor([0, 1, 2, 0]), 2), ValueError, "NaN or inf (or, binned, scores outside [0, 1])"),
    (lambda: run(RocAuc(sample_weight=[1., 1, 1]), torch.zeros(4, 3), torch.tensor([0, 1, 2, 0]), 2), ValueError, "sample_weight has 3 entries, but item 4 was scored"),
    (lambda: run(MacroF1(sample_weight=[1.] * 5), torch.zeros(4, 3), torch.tensor([0, 1, 2, 0]), 2), ValueError, "sample_weight has 5 entries but 4 items were scored"),
    (lambda: run(MacroF1(labels=['cat']), torch.zeros(4, 3), torch.tensor([0, 1, 2, 0]), 2), ValueError, "label 'cat' is not a class index (class names need the vocab"),
    (lambda: run(GMean(labels=[0, 5]), torch.zeros(4, 3), torch.tensor([0, 1, 2, 0]), 2), ValueError, "g_mean_labels_0_5: labels [5] lie outside the model's 3 classes"),
    (lambda: run(CohenKappa(), torch.tensor([0, 1]), torch.tensor([0, 1]), 2), ValueError, "class-index predictions need n_classes=..."),
    (lambda: run(RocAuc(), torch.tensor([0, 1]), torch.tensor([0, 1]), 2), ValueError, "roc_auc ranks scores: pass the model's outputs, not predicted classes"),
])
def test_bad_input(call, err, msg):
    with pytest.raises(err, match=re.escape(msg)): call()


def test_as_learner_metrics_on_real_images(lt_path):
    from fastai.vision.all import ImageDataLoaders, vision_learner, set_seed
    from conftest import tiny_arch
    set_seed(0)
    dls = ImageDataLoaders.from_folder(lt_path, valid='valid', bs=32, num_workers=0)
    mets = [CohenKappa(), BalancedAccuracy(), MacroF1(), GMean(), RocAuc(), RocAuc(thresholds=1000), AveragePrecision()]
    learn = vision_learner(dls, tiny_arch, pretrained=False, metrics=mets)
    with learn.no_bar(), learn.no_logging(): learn.fit(1)
    names = learn.recorder.metric_names[3:-1]
    assert names == ['cohen_kappa', 'balanced_accuracy', 'macro_f1', 'g_mean', 'roc_auc', 'roc_auc_binned_1000', 'average_precision']
    got = dict(zip(range(len(mets)), learn.recorder.values[-1][2:]))
    p, y = learn.get_preds()
    yp = p.argmax(1)
    assert got[0] == pytest.approx(skm.cohen_kappa_score(y, yp), abs=1e-6)
    assert got[1] == pytest.approx(skm.balanced_accuracy_score(y, yp), abs=1e-6)
    assert got[2] == pytest.approx(skm.f1_score(y, yp, average='macro'), abs=1e-6)
    assert got[3] == pytest.approx(geometric_mean_score(y, yp), abs=1e-6)
    assert got[4] == pytest.approx(skm.roc_auc_score(y, p, multi_class='ovr'), abs=1e-6)
    assert got[5] == pytest.approx(got[4], abs=mets[5].error_bound + 1e-9)
    assert got[6] == pytest.approx(skm.average_precision_score(np.eye(10)[y], p, average='macro'), abs=1e-6)
    assert mets[0].vocab is not None and list(mets[2].per_class().index) == list(dls.vocab)
    rep = learn.class_report()
    assert rep['support'].sum() == len(y) and rep.loc[dls.vocab[0], 'recall'] == pytest.approx(skm.recall_score(y, yp, average=None)[0])


def test_binned_operating_points_close_to_exact():
    g = torch.Generator().manual_seed(3)
    y = (torch.rand(20000, generator=g) < .02).long()
    s = torch.sigmoid(torch.randn(20000, generator=g) + 2 * y)
    for cls, kw in ((SensitivityAtSpecificity, dict(spec=.9)), (SpecificityAtSensitivity, dict(sens=.8))):
        e = run(cls(activation=None, **kw), s, y, 1000)
        m = cls(activation=None, thresholds=2000, **kw)
        b = run(m, s, y, 1000)
        assert abs(e - b) < 0.01 and abs(e - b) <= m.error_bound, (cls.__name__, e, b, m.error_bound)


def test_class_index_predictions_for_the_counting_metrics():
    g = torch.Generator().manual_seed(0)
    y, z = torch.randint(0, 7, (500,), generator=g), torch.randn(500, 7, generator=g)
    for cls in (CohenKappa, BalancedAccuracy, MacroF1, GMean):
        assert run(cls(n_classes=7), z.argmax(1), y, 64) == pytest.approx(run(cls(), z, y, 64), abs=1e-12)


@pytest.mark.skipif(not torch.cuda.is_available(), reason='needs a CUDA device (none on the CI machine)')
def test_no_host_sync_per_batch_on_cuda():
    y = torch.randint(0, 50, (512,), device='cuda'); z = torch.randn(512, 50, device='cuda')
    mets = [CohenKappa(), BalancedAccuracy(), MacroF1(), GMean(), RocAuc(), RocAuc(thresholds=100), AveragePrecision(), AveragePrecision(thresholds=100)]
    torch.cuda.set_sync_debug_mode('error')
    try:
        for m in mets:
            m.reset()
            for i in range(0, 512, 64): m.update(z[i:i + 64], y[i:i + 64])
    finally: torch.cuda.set_sync_debug_mode(0)
    cpu = [run(type(m)(**({'thresholds': 100} if m.thresholds else {}) if hasattr(m, 'thresholds') else {}), z.cpu(), y.cpu(), 64) for m in mets]
    for m, c in zip(mets, cpu): assert m.value == pytest.approx(c, abs=1e-6)


def test_review_cases():
    "Inputs a review found wrong: float64 scores, the empty cut at sensitivity 0, mixed weighted batches in binned mode, thresholds on two columns, bad multilabel targets"
    s = torch.tensor([.5, .5 + 1e-10, .5 + 2e-10, .5 + 3e-10], dtype=torch.float64); y = torch.tensor([0, 1, 0, 1])
    assert run(RocAuc(activation=None), s, y, 2) == pytest.approx(skm.roc_auc_score(y, s))  # float64 kept: 0.75, not ties at float32
    assert run(AveragePrecision(activation=None), s, y, 3) == pytest.approx(skm.average_precision_score(y, s))
    s2, y2 = torch.tensor([.9, .8, .7, .6, .5, .4]), torch.tensor([0, 1, 1, 0, 1, 0])
    fpr, tpr, _ = skm.roc_curve(y2, s2, drop_intermediate=False)
    for m in (SpecificityAtSensitivity(0., activation=None), SpecificityAtSensitivity(0., activation=None, sample_weight=[1.] * 6), SpecificityAtSensitivity(0., activation=None, thresholds=100)):
        assert run(m, s2, y2, 4) == (1 - fpr[tpr >= 0]).max() == 1.
    g = torch.Generator().manual_seed(0)
    z, yy = torch.randn(200, 3, generator=g), torch.randint(0, 3, (200,), generator=g)
    for cls in (RocAuc, AveragePrecision):
        e, b = cls(), cls(thresholds=16)
        for m in (e, b):
            m.reset(); m.update(z[:100], yy[:100], torch.rand(100, generator=torch.Generator().manual_seed(1))); m.update(z[100:], yy[100:])  # weighted, then unweighted
        assert abs(e.value - b.value) <= b.error_bound + 1e-12
    p2 = torch.tensor([[.3, .7], [.45, .55], [.8, .2], [.35, .65]]); t2 = torch.tensor([1, 0, 0, 1])
    assert run(MacroF1(threshold=.6, activation=None), p2, t2, 2) == pytest.approx(skm.f1_score(t2, p2[:, 1] > .6, average='macro'))
    with pytest.raises(ValueError, match=re.escape("threshold= decides binary or multilabel outputs, but the model outputs 3 classes")):
        run(MacroF1(threshold=.6), torch.randn(4, 3), torch.tensor([0, 1, 2, 0]), 2)
    for bad in (2., -1., float('nan')):
        Y = torch.tensor([[1., 0.], [0., bad]])
        for m in (MacroF1(activation=None), RocAuc(activation=None)):
            with pytest.raises(ValueError, match=re.escape("1 multilabel targets are not 0 or 1")): run(m, torch.rand(2, 2), Y, 2)


def test_a_metric_reused_on_another_learner_reads_its_vocab():
    m = MacroF1(labels=['b'])
    z, y = torch.eye(3)[[0, 1, 2]] * 3, torch.tensor([0, 1, 2])
    for vocab, want in ((['a', 'b', 'c'], 1.), (['c', 'a', 'b'], 1.)):
        m.reset()
        m.accumulate(SimpleNamespace(pred=z, yb=(torch.tensor([2, 0, 0]) if vocab[0] == 'c' else y,), dl=None, loss_func=None, metrics=[m], dls=SimpleNamespace(vocab=vocab)))
        assert m.vocab == vocab
    assert m.value == pytest.approx(skm.f1_score([2, 0, 0], [0, 1, 2], labels=[2], average='macro'))  # 'b' is class 2 of the second vocab


def test_names_tell_settings_apart():
    assert MacroF1(labels=[0, 1]).name != MacroF1(labels=[2, 3]).name == 'macro_f1_labels_2_3'
    assert RocAuc(sample_weight=[1., 2.]).name != RocAuc(sample_weight=[2., 1.]).name
    assert MacroF1(zero_division=np.nan).name == 'macro_f1_zero_division_nan' and RocAuc(absent='nan').name == 'roc_auc_absent_nan'


# --- one learner, many settings; probabilities by hand; one-column targets; one-batch calls; ignore_index; averages ---

def tensor_learner(C=5, n=400, seed=0, metrics=(), bs=64, y=None):
    "A plain-tensor `Learner` (`TensorDataset`s, a linear model, fastai's cross-entropy) over 4 features and `C` skewed classes"
    from torch import nn
    from torch.utils.data import TensorDataset
    from fastai.data.core import DataLoaders
    from fastai.learner import Learner
    from fastai.losses import CrossEntropyLossFlat
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 4, generator=g)
    if y is None: y = torch.bucketize(x[:, 0] + torch.randn(n, generator=g), torch.linspace(-1, 2, C - 1))  # skewed: the top classes are rare
    torch.manual_seed(seed)
    dls = DataLoaders.from_dsets(TensorDataset(x[:n // 2], y[:n // 2]), TensorDataset(x[n // 2:], y[n // 2:]), bs=bs)
    return Learner(dls, nn.Linear(4, C), loss_func=CrossEntropyLossFlat(), metrics=list(metrics))


def test_settings_on_one_learner_each_give_their_own_value():
    "Metrics of one learner share a prepared batch only when they would prepare it alike: every setting gives its own reference value"
    mets = [MacroF1(), MacroF1(labels=[0, 2]), MacroF1(average='weighted'), MacroF1(average='micro'), MacroF1(zero_division=np.nan, labels=[0, 1, 2, 3, 4]),
            BalancedAccuracy(), BalancedAccuracy(adjusted=True), GMean(), GMean(correction=.01), GMean(labels=[1, 2, 3]),
            CohenKappa(), CohenKappa(weights='quadratic'), CohenKappa(weights='linear', labels=[0, 1, 2]), CohenKappa(labels=[1, 2, 3]),
            RocAuc(), RocAuc(average='weighted'), RocAuc(average='micro'), RocAuc(multi_class='ovo'), RocAuc(pos=2), RocAuc(thresholds=64),
            AveragePrecision(), AveragePrecision(average='micro'), AveragePrecision(average='weighted')]
    learn = tensor_learner(5, metrics=mets)
    with learn.no_bar(), learn.no_logging(): vals = learn.validate()[1:]
    learn.metrics = []
    p, y = learn.get_preds()
    yp, Y = p.argmax(1), np.eye(5)[y]
    assert len(set(y.tolist())) == 5  # every class present: scikit-learn's multiclass scores are defined
    refs = [skm.f1_score(y, yp, average='macro'), skm.f1_score(y, yp, labels=[0, 2], average='macro'), skm.f1_score(y, yp, average='weighted'),
            skm.f1_score(y, yp, average='micro'), skm.f1_score(y, yp, labels=range(5), average='macro', zero_division=np.nan),
            skm.balanced_accuracy_score(y, yp), skm.balanced_accuracy_score(y, yp, adjusted=True), geometric_mean_score(y, yp),
            geometric_mean_score(y, yp, correction=.01), geometric_mean_score(y, yp, labels=[1, 2, 3]),
            skm.cohen_kappa_score(y, yp, labels=range(5)), skm.cohen_kappa_score(y, yp, weights='quadratic', labels=range(5)),
            skm.cohen_kappa_score(y, yp, weights='linear', labels=[0, 1, 2]), skm.cohen_kappa_score(y, yp, labels=[1, 2, 3]),
            skm.roc_auc_score(y, p, multi_class='ovr'), skm.roc_auc_score(y, p, multi_class='ovr', average='weighted'),
            skm.roc_auc_score(Y, p, average='micro'), skm.roc_auc_score(y, p, multi_class='ovo'), skm.roc_auc_score(y == 2, p[:, 2]), None,
            skm.average_precision_score(Y, p), skm.average_precision_score(Y, p, average='micro'), skm.average_precision_score(Y, p, average='weighted')]
    refs[19] = refs[14]
    for m, v, r in zip(mets, vals, refs):
        assert v == pytest.approx(r, abs=m.error_bound if m.error_bound is not None else 1e-9), (m.name, v, r)
    assert len({m.name for m in mets}) == len(mets)


def test_partial_auc_after_a_plain_auc_on_one_learner_still_refuses_multiclass():
    learn = tensor_learner(5, metrics=[RocAuc(), RocAuc(max_fpr=.1)])
    with pytest.raises(ValueError, match=re.escape("roc_auc_max_fpr_0.1: partial AUC (max_fpr) is not available for multiclass outputs")):
        with learn.no_bar(), learn.no_logging(): learn.validate()
    learn.metrics = []
    p, y = learn.get_preds()
    with pytest.raises(ValueError, match="Partial AUC computation not available in multiclass setting"): skm.roc_auc_score(y, p, multi_class='ovr', max_fpr=.1)


def test_binary_settings_on_one_learner_each_give_their_own_value():
    mets = [RocAuc(), RocAuc(max_fpr=.1), RocAuc(max_fpr=.3), RocAuc(pos=0), AveragePrecision(), AveragePrecision(pos=0),
            SensitivityAtSpecificity(.9), SensitivityAtSpecificity(.7), SpecificityAtSensitivity(.8), MacroF1(), MacroF1(threshold=.3),
            BalancedAccuracy(), BalancedAccuracy(threshold=.3)]
    learn = tensor_learner(2, metrics=mets)
    with learn.no_bar(), learn.no_logging(): vals = learn.validate()[1:]
    learn.metrics = []
    p, y = learn.get_preds()
    s = p[:, 1]
    fpr, tpr, _ = skm.roc_curve(y, s, drop_intermediate=False)
    refs = [skm.roc_auc_score(y, s), skm.roc_auc_score(y, s, max_fpr=.1), skm.roc_auc_score(y, s, max_fpr=.3), skm.roc_auc_score(1 - y, p[:, 0]),
            skm.average_precision_score(y, s), skm.average_precision_score(1 - y, p[:, 0]), tpr[fpr <= .1 + 1e-12].max(), tpr[fpr <= .3 + 1e-12].max(),
            (1 - fpr[tpr >= .8 - 1e-12]).max(), skm.f1_score(y, p.argmax(1), average='macro'), skm.f1_score(y, s > .3, average='macro'),
            skm.balanced_accuracy_score(y, p.argmax(1)), skm.balanced_accuracy_score(y, s > .3)]
    for m, v, r in zip(mets, vals, refs): assert v == pytest.approx(r, abs=1e-9), (m.name, v, r)


_alt = dict(axis=1, activation='sigmoid', ignore_index=255, sync=True, threshold=.3, n_classes=4, weights='linear', labels=[0, 1], average='micro',
            max_fpr=.5, multi_class='raise', thresholds=10, pos=0, on_device=True, sample_weight=[1.], adjusted=True, absent='nan', zero_division=0.,
            correction=.01, spec=.5, sens=.5, chunk=8)

@pytest.mark.parametrize('cls', [BalancedAccuracy, MacroF1, GMean, CohenKappa, RocAuc, AveragePrecision, SensitivityAtSpecificity, SpecificityAtSensitivity])
def test_every_setting_a_batch_is_prepared_with_is_in_the_sharing_key(cls):
    "A setting left out of the key must be one the value alone reads (`_value_only`); every other one keeps two metrics from sharing a prepared batch"
    base = cls()
    settings = [k for k in vars(base) if not k.startswith('_') and k not in base._pass_attrs and k != 'vocab']
    assert {'axis', 'activation', 'ignore_index', 'sample_weight', 'sync'} <= set(settings) and set(cls._value_only) <= set(settings)
    for k in settings:
        try: other = cls(**{k: _alt[k]})
        except ValueError: continue  # a setting this metric refuses alone (max_fpr of AveragePrecision)
        assert (other._key() == base._key()) == (k in cls._value_only), (cls.__name__, k)


def test_probabilities_by_hand_are_taken_as_they_are():
    g = torch.Generator().manual_seed(0)
    z, y = torch.randn(300, 5, generator=g) * 2, torch.randint(0, 5, (300,), generator=g)
    p = z.softmax(1)
    ref = skm.roc_auc_score(y, p, multi_class='ovr')
    for bs in (300, 64):
        assert run(RocAuc(), p, y, bs) == pytest.approx(ref, abs=1e-12)  # no second softmax
        assert run(RocAuc(), z, y, bs) == pytest.approx(ref, abs=1e-12)  # logits: softmax
        assert run(AveragePrecision(), p, y, bs) == pytest.approx(skm.average_precision_score(np.eye(5)[y], p), abs=1e-12)
        ph = p.half().float()  # float16 rows sum to 1 within its precision
        assert run(RocAuc(), p.half(), y, bs) == pytest.approx(np.mean([skm.roc_auc_score(y == c, ph[:, c]) for c in range(5)]), abs=1e-12)
    assert RocAuc()(p, y) == pytest.approx(ref, abs=1e-12)
    q = torch.rand(300, 5, generator=g)  # in [0, 1] but rows not summing to 1: raw outputs
    assert run(RocAuc(), q, y, 64) == pytest.approx(skm.roc_auc_score(y, q.softmax(1), multi_class='ovr'), abs=1e-12)
    # one probability per item: decided at 0.5 (or threshold=), not at sigmoid(p) > 0.5
    s, yb = torch.sigmoid(torch.randn(300, generator=g) - 1), (torch.rand(300, generator=g) < .3).long()
    for pred in (s, s[:, None]):
        assert run(BalancedAccuracy(), pred, yb, 64) == pytest.approx(skm.balanced_accuracy_score(yb, s > .5), abs=1e-12)
        assert run(MacroF1(threshold=.3), pred, yb, 64) == pytest.approx(skm.f1_score(yb, s > .3, average='macro'), abs=1e-12)
        assert run(SensitivityAtSpecificity(.9), pred, yb, 64) == pytest.approx(run(SensitivityAtSpecificity(.9, activation=None), pred, yb, 64), abs=1e-12)
    # multilabel probabilities
    Y, P = (torch.rand(300, 4, generator=g) < .3).float(), torch.rand(300, 4, generator=g)
    assert run(MacroF1(), P, Y, 64) == pytest.approx(skm.f1_score(Y, P > .5, average='macro'), abs=1e-12)
    assert run(MacroF1(), P * 6 - 3, Y, 64) == pytest.approx(skm.f1_score(Y, P > .5, average='macro'), abs=1e-12)  # logits: sigmoid
    # the first batch decides; raw outputs after batches read as probabilities are an error that says what to pass
    m = RocAuc(); m.update(p[:100], y[:100]); m.update(z[100:], y[100:])
    with pytest.raises(ValueError, match=r"roc_auc: with activation='auto' and no loss to say what the outputs are, the first batch was read as probabilities .* but 1 later batches are not probabilities: pass activation='softmax' or 'sigmoid' for raw outputs, or activation=None"):
        m.value
    m = RocAuc(); m.update(z[:100], y[:100]); m.update(p[100:], y[100:])  # logits first: later batches are logits too, whatever they look like
    assert m.value == pytest.approx(skm.roc_auc_score(y, torch.cat([p[:100], p[100:].softmax(1)]), multi_class='ovr'), abs=1e-12)


def test_pytorch_losses_say_what_the_outputs_are():
    from torch import nn
    g = torch.Generator().manual_seed(1)
    z, y = torch.rand(64, 3, generator=g), torch.randint(0, 3, (64,), generator=g)
    z = z / z.sum(1, keepdim=True)  # logits that look like probabilities: the loss says they are logits
    for lf, want in ((nn.CrossEntropyLoss(), z.softmax(1)), (None, z)):
        m = RocAuc(); m.accumulate(SimpleNamespace(pred=z, yb=(y,), dl=None, loss_func=lf, metrics=[m]))
        assert m.value == pytest.approx(skm.roc_auc_score(y, want, multi_class='ovr'), abs=1e-12)
    s, yb = torch.rand(64, generator=g), torch.randint(0, 2, (64,), generator=g)
    for lf, want in ((nn.BCEWithLogitsLoss(), torch.sigmoid(s) > .5), (nn.BCELoss(), s > .5)):
        m = MacroF1(); m.accumulate(SimpleNamespace(pred=s, yb=(yb,), dl=None, loss_func=lf, metrics=[m]))
        assert m.value == pytest.approx(skm.f1_score(yb, want, average='macro'), abs=1e-12)


_one_col = [(lambda: BalancedAccuracy(), lambda y, s: skm.balanced_accuracy_score(y, s > .5)),
            (lambda: MacroF1(), lambda y, s: skm.f1_score(y, s > .5, average='macro')),
            (lambda: MacroF1(threshold=.3), lambda y, s: skm.f1_score(y, s > .3, average='macro')),
            (lambda: MacroF1(average=None), lambda y, s: skm.f1_score(y, s > .5, average=None)),
            (lambda: GMean(), lambda y, s: geometric_mean_score(y, s > .5)),
            (lambda: CohenKappa(), lambda y, s: skm.cohen_kappa_score(y, s > .5)),
            (lambda: RocAuc(), lambda y, s: skm.roc_auc_score(y, s)),
            (lambda: RocAuc(max_fpr=.2), lambda y, s: skm.roc_auc_score(y, s, max_fpr=.2)),
            (lambda: AveragePrecision(), lambda y, s: skm.average_precision_score(y, s)),
            (lambda: SensitivityAtSpecificity(.8), lambda y, s: (lambda f, t: t[f <= .2 + 1e-12].max())(*skm.roc_curve(y, s, drop_intermediate=False)[:2]))]

@pytest.mark.parametrize('make,ref', _one_col, ids=['balanced_accuracy', 'macro_f1', 'macro_f1_threshold', 'f1_per_class', 'g_mean', 'cohen_kappa', 'roc_auc', 'roc_auc_max_fpr', 'average_precision', 'sensitivity_at_specificity'])
def test_one_column_targets_are_one_binary_problem(make, ref):
    "(N, 1) scores with (N, 1) targets (a one-column MultiCategoryBlock with BCE) score as (N,) ones: one binary problem, both classes"
    g = torch.Generator().manual_seed(4)
    y = (torch.rand(300, generator=g) < .25).long()
    z = torch.randn(300, generator=g) + 1.2 * y - .8
    want = ref(y.numpy(), torch.sigmoid(z).numpy())
    for pred in (z, z[:, None]):
        for targ in (y, y[:, None], y[:, None].float()):
            np.testing.assert_allclose(run(make(), pred, targ, 64), want, atol=1e-12)


def test_one_column_multicategory_learner():
    "Through fastai: a `MultiCategoryBlock(encoded=True)` with one column and BCE gives (bs, 1) targets and (bs, 1) logits"
    import pandas as pd
    from torch import nn
    from fastai.data.all import DataBlock, TransformBlock, MultiCategoryBlock, IndexSplitter
    from fastai.learner import Learner
    from fastai.losses import BCEWithLogitsLossFlat
    import fastai_imbalance.interpret  # Learner.threshold_for
    rng = np.random.default_rng(0)
    df = pd.DataFrame(rng.normal(size=(300, 4)), columns=list('abcd')); df['pos'] = (df.a + rng.normal(size=300) > 1.2).astype(int)
    db = DataBlock(blocks=(TransformBlock, MultiCategoryBlock(encoded=True, vocab=['pos'])), get_x=lambda r: torch.tensor(r[list('abcd')].values.astype(np.float32)),
                   get_y=lambda r: [r.pos], splitter=IndexSplitter(range(200, 300)))
    dls = db.dataloaders(df, bs=32)
    assert dls.one_batch()[1].shape == (32, 1)
    mets = [m() for m, _ in _one_col]
    torch.manual_seed(0)
    learn = Learner(dls, nn.Linear(4, 1), loss_func=BCEWithLogitsLossFlat(), metrics=mets)
    with learn.no_bar(), learn.no_logging(): vals = learn.validate()[1:]
    learn.metrics = []
    p, y = learn.get_preds()
    assert p.shape == y.shape == (100, 1)
    for m, v, (_, ref) in zip(mets, vals, _one_col): np.testing.assert_allclose(v, ref(y[:, 0].numpy(), p[:, 0].numpy()), atol=1e-9, err_msg=m.name)
    rep = learn.class_report()
    assert list(rep.sort_index().support) == [int((y == 0).sum()), int((y == 1).sum())]
    r = learn.threshold_for(specificity=.8)  # one probability per item: thresholds on it
    fpr, tpr, _ = skm.roc_curve(y[:, 0], p[:, 0], drop_intermediate=False)
    assert r['specificity'] >= .8 and r['sensitivity'] == pytest.approx(tpr[fpr <= .2 + 1e-12].max())
    with pytest.raises(ValueError, match=re.escape("this model outputs one score per item: decide at r['threshold'] through its loss instead")):
        learn.threshold_for(specificity=.8, apply=True)


def test_a_metric_called_on_one_batch_equals_fastais():
    "fastai's metrics are callable on one batch (`RocAuc()(preds, targs)`); the library's are too, with the same number, and also take logits"
    import fastai.metrics as fm
    from fastai_imbalance import all as fa
    g = torch.Generator().manual_seed(5)
    y = torch.randint(0, 4, (200,), generator=g); z = torch.randn(200, 4, generator=g); z[torch.arange(200), y] += 1
    p, yp = z.softmax(1), z.argmax(1)
    yb, s = (y == 0).long(), p[:, 0]
    cases = [(fa.RocAuc(), fm.RocAuc(), (p, y)), (fa.RocAuc(average='weighted'), fm.RocAuc(average='weighted'), (p, y)),
             (fa.RocAuc(multi_class='ovo'), fm.RocAuc(multi_class='ovo'), (p, y)), (fa.RocAuc(), fm.RocAucBinary(), (s, yb)),
             (fa.RocAuc(max_fpr=.3), fm.RocAucBinary(max_fpr=.3), (s, yb)), (fa.BalancedAccuracy(), fm.BalancedAccuracy(), (yp, y)),
             (fa.BalancedAccuracy(adjusted=True), fm.BalancedAccuracy(adjusted=True), (yp, y)), (fa.CohenKappa(), fm.CohenKappa(), (yp, y)),
             (fa.CohenKappa(weights='quadratic'), fm.CohenKappa(weights='quadratic'), (yp, y)), (fa.BalancedAccuracy(), fm.BalancedAccuracy(), (yp[:50], y[:50]))]
    for ours, theirs, args in cases:
        assert ours(*args) == pytest.approx(theirs(*args), abs=1e-12), ours.name
    # against scikit-learn, and logits too (fastai's need probabilities or predicted classes)
    assert fa.RocAuc()(z, y) == pytest.approx(skm.roc_auc_score(y, p, multi_class='ovr'), abs=1e-12)
    assert fa.BalancedAccuracy()(z, y) == pytest.approx(skm.balanced_accuracy_score(y, yp), abs=1e-12)
    assert fa.CohenKappa()(z, y) == pytest.approx(skm.cohen_kappa_score(y, yp), abs=1e-12)
    for m, ref in ((MacroF1(), skm.f1_score(y, yp, average='macro')), (GMean(), geometric_mean_score(y, yp)),
                   (AveragePrecision(), skm.average_precision_score(np.eye(4)[y], p)), (MacroF1(average='none'), skm.f1_score(y, yp, average=None))):
        np.testing.assert_allclose(m(yp if isinstance(m, ConfusionMetric) else p, y), ref, atol=1e-12)
        np.testing.assert_allclose(m(z, y), ref, atol=1e-12)
    fpr, tpr, _ = skm.roc_curve(yb, s, drop_intermediate=False)
    assert SensitivityAtSpecificity(.9)(s, yb) == pytest.approx(tpr[fpr <= .1 + 1e-12].max(), abs=1e-12)
    assert SpecificityAtSensitivity(.9)(s, yb) == pytest.approx((1 - fpr[tpr >= .9 - 1e-12]).max(), abs=1e-12)
    m = RocAuc(); m.update(z[:100], y[:100])
    assert m(p[100:], y[100:]) == pytest.approx(skm.roc_auc_score(y[100:], p[100:], multi_class='ovr'), abs=1e-12)  # a call resets first, as fastai's


@st.composite
def with_ignored(draw):
    "Single-label data where some targets are the ignore value (255, or a class index)"
    z, y, bs, w = draw(single_label(min_c=2, max_c=5))
    g = np.random.default_rng(draw(st.integers(0, 2**31)))
    ign = draw(st.sampled_from([255, -1, 0]))
    y = y.clone(); y[torch.tensor(g.random(len(y)) < .3)] = ign
    return z.float(), y, bs, w, ign


@hyp
@given(with_ignored())
def test_ignore_index_leaves_those_items_out(d):
    z, y, bs, w, ign = d
    keep = (y != ign).numpy()
    C = z.shape[1]
    sw = None if w is None else torch.tensor(w)
    yk, zk, wk = y.numpy()[keep], z.numpy()[keep], None if w is None else w[keep]
    ypk = zk.argmax(1)
    for cls, kw in ((BalancedAccuracy, {}), (MacroF1, {}), (MacroF1, dict(average='weighted')), (MacroF1, dict(average='micro')), (GMean, {}),
                    (CohenKappa, {}), (CohenKappa, dict(weights='quadratic')), (RocAuc, {}), (AveragePrecision, {}), (RocAuc, dict(thresholds=16)),
                    (SensitivityAtSpecificity, {}), (RocAuc, dict(average='micro'))):
        kw = dict(kw, activation='softmax')  # logits by hand (coarse ones can look like probabilities)
        got = run(cls(ignore_index=ign, **kw), z, y, bs, sw)
        if not keep.any(): assert got is None or np.isnan(got); continue
        ref = run(cls(**kw), torch.tensor(zk), torch.tensor(yk), bs, None if wk is None else torch.tensor(wk))  # the kept items alone
        assert close(got, ref, 1e-12), (cls.__name__, kw, got, ref)
    if keep.any() and (wk is None or wk.sum() > 0):
        assert close(run(BalancedAccuracy(ignore_index=ign), z, y, bs, sw), skm.balanced_accuracy_score(yk, ypk, sample_weight=wk))
        assert close(run(MacroF1(ignore_index=ign, average='weighted'), z, y, bs, sw), skm.f1_score(yk, ypk, average='weighted', sample_weight=wk))
        assert close(run(CohenKappa(ignore_index=ign), z, y, bs, sw), skm.cohen_kappa_score(yk, ypk, labels=range(C), sample_weight=wk))
        Yk, pk = np.eye(C)[yk], torch.tensor(zk).softmax(1).numpy()
        ok = [c for c in range(C) if 0 < Yk[:, c].sum() < len(yk)]
        if ok and wk is None:
            assert close(run(RocAuc(ignore_index=ign, activation='softmax'), z, y, bs, sw), np.mean([skm.roc_auc_score(Yk[:, c], pk[:, c]) for c in ok]))


def test_ignore_index_on_segmentation_and_multilabel_targets():
    g = torch.Generator().manual_seed(6)
    z, y = torch.randn(4, 3, 8, 8, generator=g), torch.randint(0, 3, (4, 8, 8), generator=g)
    y[:, :2] = 255  # unlabelled pixels
    keep = (y != 255).flatten()
    zf, yf = z.movedim(1, -1).reshape(-1, 3)[keep], y.flatten()[keep]
    pf, ypf = zf.softmax(1).numpy(), zf.argmax(1).numpy()
    with pytest.raises(ValueError, match="targets lie outside the model's 3 classes"): run(MacroF1(axis=1), z, y, 2)  # without ignore_index: refused
    refs = {BalancedAccuracy: skm.balanced_accuracy_score(yf, ypf), MacroF1: skm.f1_score(yf, ypf, average='macro'), GMean: geometric_mean_score(yf, ypf),
            CohenKappa: skm.cohen_kappa_score(yf, ypf), RocAuc: skm.roc_auc_score(yf, pf, multi_class='ovr'), AveragePrecision: skm.average_precision_score(np.eye(3)[yf], pf)}
    for cls, ref in refs.items():
        m = cls(axis=1, ignore_index=255)
        assert run(m, z, y, 2) == pytest.approx(ref, abs=1e-9) and m.name.endswith('ignore_255')
    # multilabel: entries marked -1 are left out of their label only
    Y = (torch.rand(200, 4, generator=g) < .3).float(); S = torch.rand(200, 4, generator=g)
    Y[torch.rand(200, 4, generator=g) < .2] = -1
    w = torch.rand(200, generator=g).numpy()
    for weights in (None, w):
        def per_label(f, **kw):
            return np.mean([f(Y[Y[:, j] >= 0, j], S[Y[:, j] >= 0, j], sample_weight=None if weights is None else weights[(Y[:, j] >= 0).numpy()], **kw) for j in range(4)])
        sw = None if weights is None else torch.tensor(weights)
        assert run(RocAuc(activation=None, ignore_index=-1), S, Y, 32, sw) == pytest.approx(per_label(skm.roc_auc_score), abs=1e-9)
        assert run(AveragePrecision(activation=None, ignore_index=-1), S, Y, 32, sw) == pytest.approx(per_label(skm.average_precision_score), abs=1e-9)
        f1 = np.mean([skm.f1_score(Y[Y[:, j] >= 0, j], S[Y[:, j] >= 0, j] > .5, sample_weight=None if weights is None else weights[(Y[:, j] >= 0).numpy()]) for j in range(4)])
        assert run(MacroF1(activation=None, ignore_index=-1), S, Y, 32, sw) == pytest.approx(f1, abs=1e-9)
        b = RocAuc(activation=None, ignore_index=-1, thresholds=50)
        assert abs(run(b, S, Y, 32, sw) - per_label(skm.roc_auc_score)) <= b.error_bound + 1e-12
    keep = (Y >= 0).numpy().ravel()
    assert run(RocAuc(activation=None, ignore_index=-1, average='micro'), S, Y, 32) == pytest.approx(skm.roc_auc_score(Y.numpy().ravel()[keep], S.numpy().ravel()[keep]), abs=1e-9)
    with pytest.raises(TypeError, match="ignore_index must be an int"): MacroF1(ignore_index=255.5)


@hyp
@given(single_label(), st.sampled_from([None, 'weighted', 'micro']), st.booleans(), st.sampled_from(['warn', np.nan]))
def test_f1_averages_equal_scikit_learn(d, average, with_labels, zd):
    z, y, bs, w = d
    yp = z.float().argmax(1).numpy()
    C = z.shape[1]
    labels = [c for c in range(C) if c % 2 == 0] if with_labels else None
    sw = None if w is None else torch.tensor(w)
    got = run(MacroF1(average=average, labels=labels, zero_division=zd), z, y, bs, sw)
    ref = skm.f1_score(y, yp, average=average, labels=labels, sample_weight=w, zero_division=zd)
    if average is None: np.testing.assert_allclose(got, ref, atol=1e-9)
    else: assert close(got, ref), (got, ref)


@hyp
@given(multilabel(), st.sampled_from([None, 'weighted', 'micro']))
def test_multilabel_f1_and_per_label_ranking_equal_scikit_learn(d, average):
    Y, S, bs, w = d
    sw = None if w is None else torch.tensor(w)
    got = run(MacroF1(activation=None, average=average), S, Y, bs, sw)
    ref = skm.f1_score(Y, S > .5, average=average, sample_weight=w)
    if average is None: np.testing.assert_allclose(got, ref, atol=1e-9)
    else: assert close(got, ref), (got, ref)
    k = Y.shape[1]
    ap = run(AveragePrecision(activation=None, average='none'), S, Y, bs, sw)
    auc = run(RocAuc(activation=None, average='none'), S, Y, bs, sw)
    assert ap.shape == auc.shape == (k,)
    for j in range(k):
        yj, wj = Y[:, j].numpy(), np.ones(len(Y)) if w is None else w
        if (yj * wj).sum() > 0: assert close(ap[j], skm.average_precision_score(yj, S[:, j], sample_weight=w))
        else: assert np.isnan(ap[j])
        if (yj * wj).sum() > 0 and ((1 - yj) * wj).sum() > 0: assert close(auc[j], skm.roc_auc_score(yj, S[:, j], sample_weight=w))
        else: assert np.isnan(auc[j])


def test_per_class_ranking_values_and_names():
    g = torch.Generator().manual_seed(7)
    y = torch.randint(0, 4, (300,), generator=g); z = torch.randn(300, 4, generator=g); z[torch.arange(300), y] += 1
    p = z.softmax(1)
    np.testing.assert_allclose(run(RocAuc(average=None), z, y, 64), skm.roc_auc_score(y, p, multi_class='ovr', average=None), atol=1e-12)
    np.testing.assert_allclose(run(AveragePrecision(average='none'), z, y, 64), skm.average_precision_score(np.eye(4)[y], p, average=None), atol=1e-12)
    b = RocAuc(average='none', thresholds=100)
    v = run(b, z, y, 64)
    assert b.error_bound.shape == (4,) and (np.abs(v - skm.roc_auc_score(y, p, multi_class='ovr', average=None)) <= b.error_bound + 1e-12).all()
    y3 = y.clone(); y3[y3 == 3] = 0  # class 3 absent: NaN for it, with a warning naming it
    with pytest.warns(UserWarning, match="roc_auc_per_class: NaN for class 3, which has no positive"):
        v = run(RocAuc(average='none'), z, y3, 64)
    assert np.isnan(v[3]) and not np.isnan(v[:3]).any()
    with pytest.raises(ValueError, match="class 3 has no positive"): run(RocAuc(average='none', absent='raise'), z, y3, 64)
    assert run(RocAuc(average='none'), p[:, 1], (y == 1).long(), 64) == pytest.approx(skm.roc_auc_score(y == 1, p[:, 1]), abs=1e-12)  # binary: its one value
    assert [m.name for m in (RocAuc(average=None), MacroF1(average=None), MacroF1(average='weighted'), MacroF1(average='micro'))] == ['roc_auc_per_class', 'f1_per_class', 'f1_weighted', 'f1_micro']
    with pytest.raises(ValueError, match="multi_class='ovo' takes average='macro' or 'weighted'"): RocAuc(multi_class='ovo', average=None)
    with pytest.raises(ValueError, match="unknown average 'samples'"): MacroF1(average='samples')
