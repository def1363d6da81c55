"Metrics against scikit-learn (and imbalanced-learn), property-tested: ties, float16, single-class batches, absent classes, binned error bounds, bad input."
import re, warnings
import numpy as np, pytest, torch
from hypothesis import given, settings, strategies as st, HealthCheck
from sklearn import metrics as skm
from fastai_imbalance.metrics import (CohenKappa, BalancedAccuracy, MacroF1, GMean, RocAuc, AveragePrecision, SensitivityAtSpecificity,
                                      SpecificityAtSensitivity, exact_curve_sums, binned_curve_sums, ovo_auc, class_report)

warnings.filterwarnings('ignore', message='.*skipped class.*')


def run(m, pred, targ, bs):
    "Stream `pred`, `targ` through metric `m` in batches of `bs`"
    m.reset()
    for i in range(0, len(targ), bs): m.update(pred[i:i + bs], targ[i:i + bs])
    return m.value


@st.composite
def single_label(draw, min_c=2, max_c=6):
    "Targets, logits with many ties, a batch size; some classes may be absent"
    n, C = draw(st.integers(2, 80)), draw(st.integers(min_c, max_c))
    seed = draw(st.integers(0, 2**31))
    g = np.random.default_rng(seed)
    y = g.integers(0, C, n)
    if draw(st.booleans()): y[y == C - 1] = 0  # a class absent from the targets
    levels = draw(st.integers(2, 8))
    z = g.integers(0, levels, (n, C)).astype(np.float32) / 2  # coarse logits: ties everywhere
    return torch.tensor(z), torch.tensor(y), draw(st.integers(1, n))

hyp = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@hyp
@given(single_label(), st.sampled_from([None, 'linear', 'quadratic']))
def test_confusion_metrics_equal_sklearn(d, w):
    z, y, bs = d
    yp = z.argmax(1).numpy()  # argmax of logits = argmax of the softmax
    present = sorted(set(y.tolist()))
    kappa = run(CohenKappa(weights=w), z, y, bs)
    ref = skm.cohen_kappa_score(y, yp, weights=w, labels=list(range(z.shape[1])))
    assert np.isnan(kappa) and np.isnan(ref) or abs(kappa - ref) < 1e-6
    with warnings.catch_warnings():
        warnings.simplefilter('ignore')
        assert abs(run(BalancedAccuracy(), z, y, bs) - skm.balanced_accuracy_score(y, yp)) < 1e-6
        assert abs(run(BalancedAccuracy(adjusted=True), z, y, bs) - skm.balanced_accuracy_score(y, yp, adjusted=True)) < 1e-6 or len(present) == 1
        assert abs(run(MacroF1(), z, y, bs) - skm.f1_score(y, yp, average='macro', labels=present, zero_division=0)) < 1e-6
        rec = skm.recall_score(y, yp, average=None, labels=present, zero_division=0)
        assert abs(run(GMean(), z, y, bs) - (np.exp(np.log(rec).mean()) if (rec > 0).all() else 0.)) < 1e-6


@hyp
@given(single_label(min_c=3))
def test_ranking_metrics_equal_sklearn_multiclass(d):
    z, y, bs = d
    for half in (False, True):
        p = z.softmax(1)
        if half: p = p.half()  # float16 scores: compared on the same float16 values, cast up
        pn = p.float().numpy()
        C = p.shape[1]
        ok = [c for c in range(C) if 0 < (y == c).sum() < len(y)]
        if not ok: continue
        auc = [skm.roc_auc_score(y == c, pn[:, c]) for c in ok]
        ap = [skm.average_precision_score(y == c, pn[:, c]) for c in ok]
        npos = np.array([(y == c).sum().item() for c in ok], dtype=float)
        assert abs(run(RocAuc(activation=None), p, y, bs) - np.mean(auc)) < 1e-6
        assert abs(run(RocAuc('weighted', activation=None), p, y, bs) - (np.array(auc) * npos).sum() / npos.sum()) < 1e-6
        assert abs(run(AveragePrecision(activation=None), p, y, bs) - np.mean(ap)) < 1e-6
        if not half and len(ok) == C and len(set(y.tolist())) == C:  # scikit-learn's multiclass scores need every class present (and rows summing to 1)
            assert abs(run(RocAuc(activation=None), p, y, bs) - skm.roc_auc_score(y, pn, multi_class='ovr')) < 1e-6
            assert abs(run(RocAuc('ovo', activation=None), p, y, bs) - skm.roc_auc_score(y, pn, multi_class='ovo')) < 1e-6
            assert abs(run(RocAuc('ovo', ovo_weighted=True, activation=None), p, y, bs) - skm.roc_auc_score(y, pn, multi_class='ovo', average='weighted')) < 1e-6


@hyp
@given(st.integers(2, 120), st.integers(0, 2**31), st.integers(1, 50), st.floats(0.05, 0.95))
def test_binary_metrics_and_operating_points(n, seed, bs, q):
    g = np.random.default_rng(seed)
    y = torch.tensor(g.random(n) < q).long()
    s = torch.tensor(g.integers(0, 12, n) / 11.)  # probabilities with ties
    if y.sum() in (0, n): return
    fpr, tpr, _ = skm.roc_curve(y, s, drop_intermediate=False)
    for pred in (s, torch.stack([1 - s, s], 1)):  # one sigmoid column, or two softmax columns
        assert abs(run(RocAuc(activation=None), pred, y, bs) - skm.roc_auc_score(y, s)) < 1e-6
        assert abs(run(AveragePrecision(activation=None), pred, y, bs) - skm.average_precision_score(y, s)) < 1e-6
        for spec in (0.5, 0.9, 1.):
            assert abs(run(SensitivityAtSpecificity(spec, activation=None), pred, y, bs) - tpr[fpr <= 1 - spec + 1e-12].max()) < 1e-9
        for sens in (0.5, 0.9):
            assert abs(run(SpecificityAtSensitivity(sens, activation=None), pred, y, bs) - (1 - fpr[tpr >= sens - 1e-12]).max()) < 1e-9


@hyp
@given(st.integers(3, 60), st.integers(2, 7), st.integers(0, 2**31), st.integers(1, 60))
def test_multilabel_macro_micro(n, k, seed, bs):
    g = np.random.default_rng(seed)
    Y = (g.random((n, k)) < g.uniform(.05, .6, k)).astype(np.float32)
    S = (g.integers(0, 9, (n, k)) / 8.).astype(np.float32)
    ok = [j for j in range(k) if 0 < Y[:, j].sum() < n]
    Yt, St = torch.tensor(Y), torch.tensor(S)
    if ok:
        assert abs(run(RocAuc(activation=None), St, Yt, bs) - np.mean([skm.roc_auc_score(Y[:, j], S[:, j]) for j in ok])) < 1e-6
        assert abs(run(AveragePrecision(activation=None), St, Yt, bs) - np.mean([skm.average_precision_score(Y[:, j], S[:, j]) for j in ok])) < 1e-6
    if 0 < Y.sum() < Y.size:
        assert abs(run(RocAuc('micro', activation=None), St, Yt, bs) - skm.roc_auc_score(Y.ravel(), S.ravel())) < 1e-6
    yp = (S > .5)
    present = [j for j in range(k) if Y[:, j].sum() > 0]
    if present:
        f1 = np.mean([skm.f1_score(Y[:, j], yp[:, j], zero_division=0) for j in present])
        assert abs(run(MacroF1(activation=None), St, Yt, bs) - f1) < 1e-6


def test_gmean_equals_imbalanced_learn():
    from imblearn.metrics import geometric_mean_score
    g = np.random.default_rng(0)
    for C in (2, 5):
        y = g.integers(0, C, 400); z = torch.tensor(g.normal(size=(400, C)) + np.eye(C)[y])
        yp = z.argmax(1).numpy()
        assert abs(run(GMean(), z, torch.tensor(y), 37) - geometric_mean_score(y, yp, average='multiclass')) < 1e-9


def test_binned_auc_within_its_bound_and_close_to_exact():
    g = torch.Generator().manual_seed(0)
    n, C = 4000, 50
    y = torch.randint(0, C, (n,), generator=g)
    z = torch.randn(n, C, generator=g) * 2; z[torch.arange(n), y] += 2.
    exact, binned = RocAuc(), RocAuc(thresholds=1000)
    e, b = run(exact, z, y, 256), run(binned, z, y, 256)
    assert abs(e - b) <= binned.error_bound + 1e-12 and binned.error_bound < 5e-3 and abs(e - b) < 1e-4, (e, b, binned.error_bound)
    # the per-class bound holds class by class
    p = z.softmax(1)
    ex = exact_curve_sums(p, y)
    from fastai_imbalance.metrics import _bin
    bins = _bin(p, 1000)
    hist = torch.zeros(2, C, 1000)
    pos = torch.nn.functional.one_hot(y, C).bool()
    for c in range(C):
        hist[1, c].index_add_(0, bins[pos[:, c], c], torch.ones(int(pos[:, c].sum())))
        hist[0, c].index_add_(0, bins[~pos[:, c], c], torch.ones(int((~pos[:, c]).sum())))
    bs = binned_curve_sums(hist)
    assert ((bs['auc'] - ex['auc']).abs() <= bs['error_bound'] + 1e-12).all()
    assert (bs['ap'] - ex['ap']).abs().max() < 5e-3
    ap_b = run(AveragePrecision(thresholds=1000), z, y, 256)
    assert abs(ap_b - run(AveragePrecision(), z, y, 256)) < 5e-3


def test_absent_policy():
    z = torch.randn(20, 4); y = torch.tensor([0, 1, 2] * 6 + [0, 1])  # class 3 never in the targets
    with pytest.warns(UserWarning, match=r"roc_auc: skipped class 3, absent"):
        v = run(RocAuc(), z, y, 8)
    assert not np.isnan(v)
    assert np.isnan(run(RocAuc(absent='nan'), z, y, 8))
    with pytest.raises(ValueError, match=r"roc_auc: class 3 has no positive"): run(RocAuc(absent='raise'), z, y, 8)
    m = BalancedAccuracy(); m.vocab = ['cat', 'dog', 'eel', 'yak']
    with pytest.warns(UserWarning, match="skipped class yak"): run(m, z, y, 8)
    with warnings.catch_warnings(record=True) as w:  # one warning per metric, not one per read
        warnings.simplefilter('always')
        m.value; m.value
    assert not [x for x in w if 'skipped' in str(x.message)]


def test_single_class_batches_and_gpu_free_state():
    y = torch.tensor([0] * 10 + [1] * 10 + [2] * 10)
    z = torch.randn(30, 3)
    for m in (RocAuc(), AveragePrecision(), MacroF1(), CohenKappa(), RocAuc(thresholds=64)):
        a, b = run(m, z, y, 10), run(m, z, y, 30)  # every batch of 10 holds one class only
        assert abs(a - b) < 1e-12


def test_class_report_sorted_by_training_frequency():
    m = MacroF1()
    y = torch.tensor([0, 0, 0, 1, 1, 2]); z = torch.eye(3)[[0, 0, 1, 1, 1, 2]] * 5
    run(m, z, y, 6)
    df = class_report(m.state, vocab=['a', 'b', 'c'], train_counts=[10, 100, 1])
    assert list(df.index) == ['b', 'a', 'c'] and df.loc['a', 'recall'] == pytest.approx(2 / 3) and df.loc['b', 'precision'] == pytest.approx(2 / 3)
    assert list(m.per_class().support) == [3, 2, 1]


@pytest.mark.parametrize('call,err,msg', [
    (lambda: RocAuc(average='samples'), ValueError, "unknown average 'samples'"),
    (lambda: RocAuc(average='ovo', thresholds=100), ValueError, "average='ovo' is RocAuc's, in exact mode"),
    (lambda: AveragePrecision(average='ovo'), ValueError, "average='ovo' is RocAuc's"),
    (lambda: RocAuc(thresholds=1), ValueError, "thresholds must be an integer >= 2"),
    (lambda: SensitivityAtSpecificity(1.5), ValueError, "spec must lie in [0, 1], got 1.5"),
    (lambda: CohenKappa(weights='cubic'), ValueError, "unknown weights 'cubic'"),
    (lambda: RocAuc(absent='zero'), ValueError, "unknown absent policy 'zero'"),
    (lambda: MacroF1(activation='relu'), ValueError, "unknown activation 'relu'"),
    (lambda: run(RocAuc(), torch.tensor([[0., float('nan'), 1.]] * 4), torch.tensor([0, 1, 2, 0]), 2), ValueError, "roc_auc: 4 predictions were NaN or inf"),
    (lambda: run(CohenKappa(), torch.zeros(4, 3), torch.tensor([0, 1, 7, 2]), 2), ValueError, "1 targets lie outside the model's 3 classes (e.g. 7)"),
    (lambda: run(BalancedAccuracy(), torch.zeros(4, 3), torch.zeros(4, 3), 2), ValueError, "BalancedAccuracy is single-label; got multilabel targets"),
    (lambda: run(RocAuc('ovo'), torch.zeros(4, 3), torch.zeros(4, 3), 2), ValueError, "average='ovo' needs multiclass"),
    (lambda: run(RocAuc(), torch.zeros(4, 3), torch.zeros(3), 2), ValueError, "2 predictions for 1 targets"),
    (lambda: run(RocAuc(), torch.zeros(4, 3), torch.zeros(4, 2), 2), ValueError, "targets of shape (2, 2) fit neither"),
    (lambda: run(RocAuc(thresholds=10, activation=None), torch.full((4, 3), 2.), torch.tensor([0, 1, 2, 0]), 2), ValueError, "NaN, inf or (binned mode) outside [0, 1]"),
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
    assert names == ['cohen_kappa', 'balanced_accuracy', 'macro_f1', 'g_mean', 'roc_auc', 'roc_auc', 'average_precision']
    got = dict(zip(range(len(mets)), learn.recorder.values[-1][2:]))
    p, y = learn.get_preds()
    yp = p.argmax(1)
    assert got[0] == pytest.approx(skm.cohen_kappa_score(y, yp), abs=1e-6)
    assert got[1] == pytest.approx(skm.balanced_accuracy_score(y, yp), abs=1e-6)
    assert got[2] == pytest.approx(skm.f1_score(y, yp, average='macro', labels=list(range(10))), abs=1e-6)
    assert got[4] == pytest.approx(skm.roc_auc_score(y, p, multi_class='ovr'), abs=1e-6)
    assert got[5] == pytest.approx(got[4], abs=mets[5].error_bound + 1e-9)
    assert got[6] == pytest.approx(skm.average_precision_score(np.eye(10)[y], p, average='macro'), abs=1e-6)
    assert mets[0].vocab is not None and list(mets[2].per_class().index) == list(dls.vocab)


def test_binned_operating_points_close_to_exact():
    g = torch.Generator().manual_seed(3)
    y = (torch.rand(20000, generator=g) < .02).long()
    s = torch.sigmoid(torch.randn(20000, generator=g) + 2 * y)
    for cls, kw in ((SensitivityAtSpecificity, dict(spec=.9)), (SpecificityAtSensitivity, dict(sens=.8))):
        e, b = run(cls(activation=None, **kw), s, y, 1000), run(cls(activation=None, thresholds=2000, **kw), s, y, 1000)
        assert abs(e - b) < 0.01, (cls.__name__, e, b)


def test_class_index_predictions_for_the_confusion_metrics():
    g = torch.Generator().manual_seed(0)
    y, z = torch.randint(0, 7, (500,), generator=g), torch.randn(500, 7, generator=g)
    assert run(CohenKappa(n_classes=7), z.argmax(1), y, 64) == pytest.approx(run(CohenKappa(), z, y, 64), abs=1e-12)
    with pytest.raises(ValueError, match='class-index predictions need n_classes'): run(CohenKappa(), z.argmax(1), y, 64)


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
    assert all(np.isfinite(m.value) for m in mets)
