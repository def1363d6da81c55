"PriorShift: Bayes' rule on logits, calibration, EM/BBSE estimates, bad input, export."
import re, warnings
import numpy as np, pytest, torch
from fastai.vision.all import ImageDataLoaders, vision_learner, load_learner, CrossEntropyLossFlat, set_seed
from fastai_imbalance.core import class_priors
from fastai_imbalance.data import ResampledDL
from fastai_imbalance.priorshift import (check_priors, prior_shift_logits, calibrate, em_priors, bbse_priors, PriorShift, noop_act)
from conftest import tiny_arch


def calibrated_posteriors(n, k, pi_t, pi_s, a=3., seed=0):
    "x = a*onehot(y) + N(0, I): p(y|x) under pi_s is softmax(a*x + log pi_s), exactly calibrated"
    g = torch.Generator().manual_seed(seed)
    y = torch.multinomial(torch.as_tensor(pi_t).float(), n, replacement=True, generator=g)
    x = torch.randn(n, k, generator=g, dtype=torch.float64); x[torch.arange(n), y] += a
    return (a * x + torch.log(torch.as_tensor(pi_s, dtype=torch.float64))).softmax(1), y


@pytest.mark.parametrize('seed', range(3))
def test_bayes_rule_to_1e_6(seed):
    g = torch.Generator().manual_seed(seed)
    z = torch.randn(50, 7, generator=g, dtype=torch.float64) * 3
    ps, pt = torch.rand(7, generator=g, dtype=torch.float64) + .01, torch.rand(7, generator=g, dtype=torch.float64) + .01
    ps, pt = ps / ps.sum(), pt / pt.sum()
    bayes = z.softmax(1) * pt / ps
    assert torch.allclose(prior_shift_logits(z, pt, ps).softmax(1), bayes / bayes.sum(1, keepdim=True), atol=1e-6)
    # multilabel: independent binary shifts of each sigmoid
    ps, pt = ps.clamp(.05, .95), pt.clamp(.05, .95)
    p = z.sigmoid()
    b = p * pt / ps; b = b / (b + (1 - p) * (1 - pt) / (1 - ps))
    assert torch.allclose(prior_shift_logits(z, pt, ps, multilabel=True).sigmoid(), b, atol=1e-6)


@pytest.mark.parametrize('k', [3, 20])
def test_em_recovers_known_priors(k):
    rng = np.random.default_rng(k)
    pi_s, pi_t = rng.dirichlet(np.ones(k)), rng.dirichlet(np.ones(k))
    P, y = calibrated_posteriors(30_000, k, pi_t, pi_s)
    true = torch.bincount(y, minlength=k).double() / len(y)
    est = em_priors(P, pi_s)
    assert (est - true).abs().sum() < 0.05, (est - true).abs().sum()
    assert (torch.as_tensor(pi_s) - true).abs().sum() > 0.3  # the shift was real


def test_em_default_tol_against_a_tight_run():
    "The default stop (a duality gap of 1e-5) against a run certified to 1e-10: the priors agree to a fraction of the sampling noise, and so do the shifted predictions"
    k = 100
    pi_s = np.exp(-np.arange(k) / 20.); pi_s /= pi_s.sum()
    pi_t = pi_s[::-1].copy()
    P, y = calibrated_posteriors(10_000, k, pi_t, pi_s, a=1.5)
    loose, tight = em_priors(P, pi_s), em_priors(P, pi_s, tol=1e-10)
    true = torch.bincount(y, minlength=k).double() / len(y)
    assert (loose - tight).abs().sum() < 0.005 * (tight - true).abs().sum()  # far inside the estimate's own error (a stop at gap 1e-2 gives 0.045 here, 1e-5 gives 5e-5)
    shift = lambda pi: (P * (pi / torch.as_tensor(pi_s))).argmax(1)
    assert (shift(loose) != shift(tight)).double().mean() < 1e-3


def test_em_default_tol_follows_the_sampling_noise():
    "Many classes, few items: the default stops at a thousandth of (k-1)/(2n) (at most 1e-4), far sooner, and the priors stay far inside their own error"
    import fastai_imbalance.priorshift as PS
    k, n = 2000, 4000
    pi_s = np.exp(-np.arange(k) / 300.); pi_s /= pi_s.sum()
    P, y = calibrated_posteriors(n, k, pi_s[::-1].copy(), pi_s, a=1.5)
    P = P.float()
    steps, limit = [], [None]
    class Enough(Exception): pass
    orig = PS._em_step
    def counted(*a, **kw):
        s = orig(*a, **kw)
        def step(pi):
            steps.append(1)
            if limit[0] is not None and len(steps) > limit[0]: raise Enough  # tol=1e-5 has needed more steps than the default: enough
            return s(pi)
        return step
    PS._em_step = counted
    try:
        loose = em_priors(P, pi_s); n_loose = len(steps); steps.clear(); limit[0] = n_loose
        try: em_priors(P, pi_s, tol=1e-5)
        except Enough: pass
        n_1e5 = len(steps)
    finally: PS._em_step = orig
    tight = em_priors(P.double(), pi_s, tol=1e-9)
    ll = lambda p: float(torch.log(P.double() @ (p / torch.as_tensor(pi_s))).mean())
    true = torch.bincount(y, minlength=k).double() / n
    assert 0 <= ll(tight) - ll(loose) < 1e-4 and n_loose < n_1e5, (ll(tight) - ll(loose), n_loose, n_1e5)
    assert (loose - tight).abs().sum() < 0.01 * (tight - true).abs().sum()
    with pytest.raises(ValueError, match='tol=0 must be a positive number'): em_priors(P, pi_s, tol=0)


def test_em_float32_certificate_across_chunks():
    "float32 posteriors over several 8,192-row chunks: the float32 stop is within tol of the float64 maximum (its sums do not drift with n)"
    k = 20
    pi_s = np.exp(-np.arange(k) / 4.); pi_s /= pi_s.sum()
    P, _ = calibrated_posteriors(30_000, k, np.full(k, 1 / k), pi_s, a=2.)
    P64 = torch.as_tensor(P).double()
    ll = lambda pi: float(torch.log(P64 @ (pi / torch.as_tensor(pi_s))).mean())
    p32, p64 = em_priors(P64.float(), pi_s, tol=1e-5), em_priors(P64, pi_s, tol=1e-12)
    assert 0 <= ll(p64) - ll(p32) < 1e-5 + 1e-6


def test_em_floor_is_respected_at_the_floored_maximum():
    "Five classes absent from the target: every prior at least `floor`, and the likelihood is the constrained maximum (scipy's SLSQP as the reference)"
    from scipy.optimize import minimize
    torch.manual_seed(0)
    k = 10; src = torch.full((k,), .1, dtype=torch.float64)
    z = torch.randn(2000, k, dtype=torch.float64); z[:, 5:] -= 8
    P = z.softmax(1)
    ll = lambda pi: float(torch.log(P @ (torch.as_tensor(pi) / src)).mean())
    for fl in (1e-3, .05):
        with warnings.catch_warnings():
            warnings.simplefilter('error')  # converges: no warning
            r = em_priors(P, src, floor=fl, tol=1e-9)
        assert r.min() >= fl * (1 - 1e-12) and abs(float(r.sum()) - 1) < 1e-12
        ref = minimize(lambda x: -ll(x), np.full(k, 1 / k), method='SLSQP', bounds=[(fl, 1)] * k,
                       constraints=[dict(type='eq', fun=lambda x: x.sum() - 1)], options=dict(ftol=1e-14, maxiter=500))
        assert ll(r) >= -ref.fun - 1e-8, (fl, ll(r), -ref.fun)
        assert (r[5:] - fl).abs().max() < 1e-6  # the absent classes sit on the floor


def test_em_max_iter_returns_its_last_step_and_settings_are_checked():
    P, _ = calibrated_posteriors(2000, 10, np.full(10, .1), np.full(10, .1), a=0.5)
    src = np.full(10, .1)
    with pytest.warns(UserWarning, match='did not converge in 1 iterations'): one = em_priors(P, src, max_iter=1)
    assert not torch.allclose(one, torch.as_tensor(src))  # the step it took, not the source priors back
    with warnings.catch_warnings():
        warnings.simplefilter('error')
        em_priors(torch.as_tensor(P).double(), torch.as_tensor(P).double().mean(0), max_iter=1)  # already at the maximum: no false warning
    with pytest.raises(ValueError, match='max_iter=0 must be a positive integer'): em_priors(P, src, max_iter=0)
    with pytest.raises(ValueError, match="tol='1e-3' must be a positive number"): em_priors(P, src, tol='1e-3')


def test_em_multilabel_float32_prevalence_near_one():
    "A label present almost everywhere: float32 posteriors give the float64 answer (1 - the posterior's mean was float32 rounding)"
    torch.manual_seed(0)
    P = torch.rand(8191, 3, dtype=torch.float64) * .6; s = torch.tensor([.3, .1, .05], dtype=torch.float64)
    ref = em_priors(P, s, multilabel=True, tol=1e-12, max_iter=10**6)
    got = em_priors(P.float(), s, multilabel=True)
    assert ref[1] < .99 and torch.allclose(got, ref, atol=1e-4), (got, ref)


def test_bbse_and_calibration():
    k = 5; rng = np.random.default_rng(0)
    pi_s, pi_t = np.full(k, 1 / k), rng.dirichlet(np.ones(k))
    Pv, yv = calibrated_posteriors(5000, k, pi_s, pi_s, seed=1)
    Pt, yt = calibrated_posteriors(5000, k, pi_t, pi_s, seed=2)
    est = bbse_priors(Pv, yv, Pt, pi_s)
    assert (est - torch.bincount(yt, minlength=k).double() / 5000).abs().sum() < 0.1
    z = torch.log(Pv)
    cal = calibrate(z * 2.5, yv, 'ts')  # over-confident by 2.5
    assert abs(cal.log_t.exp().item() - 2.5) < 0.2
    for m in ('bcts', 'vs'):
        c = calibrate(z * 2.5 + torch.randn(k, dtype=torch.float64), yv, m)
        assert torch.nn.functional.cross_entropy(c(z * 2.5), yv) < torch.nn.functional.cross_entropy(z * 2.5, yv)


def test_em_warns_on_non_convergence():
    P, _ = calibrated_posteriors(2000, 10, np.full(10, .1), np.full(10, .1), a=0.5)
    with pytest.warns(UserWarning, match='did not converge in 2 iterations'): em_priors(P, np.full(10, .1), max_iter=2)


@pytest.mark.parametrize('call,msg', [
    (lambda: check_priors([.5, .6]), "sum to 1.1, not 1"),
    (lambda: check_priors([.5, .5], k=3), "has 2 entries but must have 3, one per class of the model"),
    (lambda: check_priors([1.2, -.2]), "found [-0.2] at positions [1]"),
    (lambda: check_priors([np.nan, 1.]), "must be finite"),
    (lambda: check_priors([0., 0.]), "all zero"),
    (lambda: check_priors([[.5, .5]]), "must be 1-d"),
    (lambda: check_priors([.5, 1.5], multilabel=True), "must lie in [0, 1]"),
    (lambda: prior_shift_logits(torch.tensor([[0., float('inf')]]), torch.tensor([.5, .5]), torch.tensor([.5, .5])), "NaN or inf (first at [0, 1]: inf)"),
    (lambda: prior_shift_logits(torch.zeros(1, 2), torch.tensor([.5, .5]), torch.tensor([1., 0.])), "source prior of class [1] is 0"),
    (lambda: prior_shift_logits(torch.zeros(1, 3), torch.tensor([.5, .5]), torch.tensor([.2, .3, .5])), "target priors have 2 entries but the model outputs 3 classes"),
    (lambda: em_priors(torch.zeros(0, 3), [1/3] * 3), "non-empty (n, k)"),
    (lambda: em_priors(torch.tensor([[.5, float('nan')]]), [.5, .5]), "contain NaN or inf"),
    (lambda: em_priors(torch.tensor([[.5, .5]]), [1., 0.]), "source prior of class [1] is 0"),
    (lambda: calibrate(torch.zeros(0, 3), torch.zeros(0)), "got none"),
    (lambda: calibrate(torch.zeros(2, 3), torch.zeros(2), 'platt'), "unknown calibration 'platt'"),
])
def test_bad_input(call, msg):
    with pytest.raises(ValueError, match=re.escape(msg)): call()


def test_callback_on_real_images_export_and_double_correction(lt_path, tmp_path):
    dls = ImageDataLoaders.from_folder(lt_path, valid='valid', bs=32, num_workers=0)
    learn = vision_learner(dls, tiny_arch, pretrained=False)
    with learn.no_bar(), learn.no_logging(): learn.fit(1)
    p0, y = learn.get_preds()
    learn.add_cb(PriorShift('uniform'))
    p1, _ = learn.get_preds()
    b = p0 / class_priors(dls); b = b / b.sum(1, keepdim=True)
    assert torch.allclose(p1, b, atol=1e-5)
    with learn.no_bar(), learn.no_logging(): learn.fit(1)  # training is unaffected, and inference stays corrected
    learn.export(tmp_path/'ps.pkl')
    l2 = load_learner(tmp_path/'ps.pkl')
    img = next((lt_path/'valid'/'9').glob('*.png'))
    assert torch.allclose(l2.predict(img)[2], learn.predict(img)[2], atol=1e-5)
    # a class-balanced loader: the model's outputs are calibrated to its uniform draws, so the uniform target is the identity (no double correction)
    rdls = dls.resampled('balanced')
    l3 = vision_learner(rdls, tiny_arch, pretrained=False)
    with l3.no_bar(), l3.no_logging(): l3.fit(1)
    assert 'ResampledDL' in l3.trained_prior.how and torch.allclose(l3.trained_prior.priors, torch.full((10,), .1, dtype=torch.float64))
    q0, _ = l3.get_preds()
    l3.add_cb(PriorShift('uniform'))
    q1, _ = l3.get_preds()
    assert torch.allclose(q0, q1, atol=1e-6)
    with pytest.raises(ValueError, match="source='sampled': pass priors"): PriorShift('uniform', source='sampled')


def test_estimate_and_adapt(lt_path):
    from fastai.vision.all import get_image_files
    dls = ImageDataLoaders.from_folder(lt_path, valid='valid', bs=32, num_workers=0)
    learn = vision_learner(dls, tiny_arch, pretrained=False)
    with learn.no_bar(), learn.no_logging(): learn.fit(1)
    files = [f for f in get_image_files(lt_path/'valid') if f.parent.name in ('0', '1')]  # a target set with only two classes
    tdl = dls.test_dl(files)
    with learn.no_bar():
        pi = learn.estimate_priors(tdl, method='em', calibrate='bcts')
        cb = learn.adapt_to(tdl)
    assert pi.shape == (10,) and abs(pi.sum() - 1) < 1e-9 and pi.min() >= 0
    assert sum(isinstance(c, PriorShift) for c in learn.cbs) == 1 and cb.calibration is not None
    with pytest.raises(ValueError, match="unknown method 'kmm'"): learn.estimate_priors(tdl, method='kmm')
    with pytest.raises(ValueError, match='unlabelled data set is empty'): learn.estimate_priors(torch.utils.data.DataLoader([]))


def test_estimate_target_in_the_callback_matches_adapt_to_and_exports(lt_path, tmp_path):
    from fastai.vision.all import get_image_files
    dls = ImageDataLoaders.from_folder(lt_path, valid='valid', bs=32, num_workers=0)
    files = [f for f in get_image_files(lt_path/'valid') if f.parent.name in ('0', '1', '2')]
    tdl = dls.test_dl(files)
    cb = PriorShift('estimate', dl=tdl)
    learn = vision_learner(dls, tiny_arch, pretrained=False, cbs=cb)
    with learn.no_bar(), learn.no_logging(): learn.fit(1)
    assert cb._tgt is None  # validation inside the fit is not shifted: nothing estimated yet
    with learn.no_bar(): learn.get_preds(dl=tdl)
    assert cb._tgt is not None and cb._cal is not None  # estimated at the first prediction, for the trained weights
    first = cb._tgt.clone()
    with learn.no_bar(), learn.no_logging(): learn.fit(1)
    with learn.no_bar(): p_cb, _ = learn.get_preds(dl=tdl)
    assert not torch.allclose(cb._tgt, first)  # re-estimated after the weights changed
    learn.remove_cb(cb)
    with learn.no_bar():
        learn.adapt_to(tdl)
        p_adapt, _ = learn.get_preds(dl=tdl)
    assert torch.allclose(p_cb, p_adapt, atol=1e-5)
    assert torch.allclose(cb._tgt, learn.prior_estimate['priors'], atol=1e-6)
    assert cb._tgt[:3].sum() > cb._src[:3].sum()  # mass moved to the three classes the target set holds
    # export keeps the estimate, not the unlabelled data; the loaded learner predicts the same
    learn.remove_cbs([c for c in learn.cbs if isinstance(c, PriorShift)]); learn.add_cb(cb)
    learn.export(tmp_path/'est.pkl')
    l2 = load_learner(tmp_path/'est.pkl')
    c2 = next(c for c in l2.cbs if isinstance(c, PriorShift))
    assert c2.dl is None and torch.allclose(c2._tgt, cb._tgt)
    assert torch.allclose(l2.predict(files[0])[2], learn.predict(files[0])[2], atol=1e-5)
    # exported before any estimate (fastai's export silences warnings): a clear error at prediction
    l3 = vision_learner(dls, tiny_arch, pretrained=False, cbs=PriorShift('estimate', dl=tdl))
    l3.export(tmp_path/'none.pkl')
    with pytest.raises(ValueError, match='has no data to estimate from'): load_learner(tmp_path/'none.pkl').predict(files[0])
    # EM's settings reach the callback's estimate: one step cannot converge, and says so
    learn.remove_cbs([c for c in learn.cbs if isinstance(c, PriorShift)])
    learn.add_cb(PriorShift('estimate', dl=tdl, max_iter=1))
    with learn.no_bar(), pytest.warns(UserWarning, match='did not converge in 1 iterations'): learn.get_preds(dl=tdl)


def test_multilabel_end_to_end(ml_path):
    import pandas as pd
    from fastai.vision.all import ImageDataLoaders
    df = pd.read_csv(ml_path/'labels.csv', keep_default_na=False)
    from fastai.torch_core import set_seed
    set_seed(0, reproducible=True)  # before the loaders: each takes its shuffling seed from `random` when it is made
    dls = ImageDataLoaders.from_df(df, ml_path, fn_col='fname', label_col='labels', label_delim=' ', valid_col='is_valid', bs=64, num_workers=0)
    learn = vision_learner(dls, tiny_arch, pretrained=False)
    with learn.no_bar(), learn.no_logging(): learn.fit(2, 3e-3)
    with learn.no_bar(): p0, y = learn.get_preds()
    ps = class_priors(dls).double()
    learn.add_cb(PriorShift('uniform'))
    with learn.no_bar(): p1, _ = learn.get_preds()
    p0 = p0.double()
    b = p0 * .5 / ps; b = b / (b + (1 - p0) * .5 / (1 - ps))  # per-label Bayes rule on each sigmoid
    assert torch.allclose(p1.double(), b, atol=1e-5)
    assert (p1.mean(0) > p0.mean(0))[ps < .5].float().mean() > .9  # rare labels are predicted more often
    # estimated per-label prevalences of an unlabelled set where every mosaic holds a 9 (the rarest label)
    has9 = df[df.is_valid & df.labels.str.contains('9')]
    tdl = dls.test_dl(list(ml_path/has9.fname))
    with learn.no_bar(): pi = learn.estimate_priors(tdl)
    assert pi.shape == (10,) and (pi > 0).all() and (pi < 1).all() and abs(pi.sum() - 1) > .1  # prevalences, not a distribution
    src = learn.prior_estimate['source']
    assert pi[9] > 3 * src[9], (pi[9], src[9])
    learn.remove_cbs([c for c in learn.cbs if isinstance(c, PriorShift)])
    with learn.no_bar():
        zt, _ = learn.get_preds(dl=tdl, act=noop_act)
        learn.adapt_to(tdl)
        pt1, _ = learn.get_preds(dl=tdl)
    est = learn.prior_estimate
    pc = torch.sigmoid(est['calibration'](zt.double()))  # calibrated, then per-label Bayes from the source to the estimate
    b = pc * est['priors'] / est['source']; b = b / (b + (1 - pc) * (1 - est['priors']) / (1 - est['source']))
    assert torch.isfinite(pt1).all() and torch.allclose(pt1.double(), b, atol=1e-5)
    assert pt1[:, 9].mean() > pc[:, 9].mean()  # adapted: label 9 predicted more often where it is everywhere
    with pytest.raises(ValueError, match='BBSE is single-label'): learn.estimate_priors(tdl, method='bbse')


def test_em_multilabel_recovers_prevalences():
    g = torch.Generator().manual_seed(0)
    n, k, a = 40_000, 6, 3.
    src, tgt = torch.tensor([.05, .1, .2, .3, .5, .7], dtype=torch.float64), torch.tensor([.3, .02, .5, .1, .5, .9], dtype=torch.float64)
    y = (torch.rand(n, k, generator=g, dtype=torch.float64) < tgt).double()
    x = (2 * y - 1) * a / 2 + torch.randn(n, k, generator=g, dtype=torch.float64)
    p = torch.sigmoid(a * x + torch.log(src / (1 - src)))  # exact posterior under `src` for this Gaussian model
    est = em_priors(p, src, multilabel=True)
    assert (est - y.mean(0)).abs().max() < .02, (est, y.mean(0))


@pytest.mark.parametrize('call,err,msg', [
    (lambda: PriorShift('estimate'), ValueError, "target='estimate' needs the unlabelled target data"),
    (lambda: PriorShift('balanced'), ValueError, "unknown target 'balanced'"),
    (lambda: PriorShift('estimate', dl=[1], source=[.5, .5]), ValueError, "fits its own calibration and source priors"),
    (lambda: PriorShift('estimate', dl=[1], method='kmm'), ValueError, "unknown method 'kmm'"),
    (lambda: calibrate(torch.zeros(3, 2), torch.tensor([0, 1, 2])), ValueError, "target 2 is outside the model's 2 classes"),
    (lambda: calibrate(torch.zeros(3, 2), torch.zeros(3, 3)), ValueError, "multilabel targets of shape (3, 3) do not match logits (3, 2)"),
    (lambda: calibrate(torch.tensor([[0., float('nan')]]), torch.tensor([0])), ValueError, "NaN or inf (first at [0, 1]: nan)"),
    (lambda: em_priors(torch.tensor([[.5, 1.5]]), [.5, .5]), ValueError, "must lie in [0, 1], found [1.5]"),
    (lambda: em_priors(torch.tensor([[.5, .5]]), [.5, 1.], multilabel=True), ValueError, "source prior of class [1] is 1"),
    (lambda: bbse_priors(torch.full((2, 2), .5), torch.zeros(2, 2), torch.full((2, 2), .5)), ValueError, "BBSE is single-label"),
    (lambda: bbse_priors(torch.full((2, 2), .5), torch.zeros(2), torch.full((2, 3), 1/3)), ValueError, "target probabilities have 3 classes, validation 2"),
])
def test_more_bad_input(call, err, msg):
    with pytest.raises(err, match=re.escape(msg)): call()


def test_bad_priors_and_nan_logits_through_a_learner(lt_path):
    dls = ImageDataLoaders.from_folder(lt_path, valid='valid', bs=32, num_workers=0)
    learn = vision_learner(dls, tiny_arch, pretrained=False, cbs=PriorShift([.5, .5]))
    with pytest.raises(ValueError, match=re.escape('target priors has 2 entries but must have 10, one per class of the model')): learn.get_preds()
    learn = vision_learner(dls, tiny_arch, pretrained=False, cbs=PriorShift([.2] * 10))
    with pytest.raises(ValueError, match=re.escape('target priors sum to 2, not 1')): learn.get_preds()
    with pytest.warns(UserWarning, match='summed to 2; rescaled'):
        vision_learner(dls, tiny_arch, pretrained=False, cbs=PriorShift([.2] * 10, normalize=True)).get_preds()
    learn = vision_learner(dls, tiny_arch, pretrained=False, cbs=PriorShift('uniform'))
    with torch.no_grad(): learn.model[-1][-1].weight.fill_(float('nan'))
    with pytest.raises(ValueError, match=re.escape('logits contain NaN or inf (first at [0, 0]: nan)')): learn.get_preds()


# --- the loss's declared kind, early resolution, inference only, EM to the maximum ---

def ml_dls(ml_path, bs=64):
    import pandas as pd
    df = pd.read_csv(ml_path/'labels.csv', keep_default_na=False)
    return ImageDataLoaders.from_df(df, ml_path, fn_col='fname', label_col='labels', label_delim=' ', valid_col='is_valid', bs=bs, num_workers=0)


def test_asymmetric_loss_model_gets_per_label_shifts(ml_path):
    from fastai_imbalance.losses import AsymmetricLoss
    dls = ml_dls(ml_path)
    learn = vision_learner(dls, tiny_arch, pretrained=False, loss_func=AsymmetricLoss())
    with learn.no_bar(), learn.no_logging(): learn.fit(1, 3e-3)
    assert learn.trained_prior.kind == 'sigmoid'
    with learn.no_bar(): p0, _ = learn.get_preds()
    cb = PriorShift('uniform'); learn.add_cb(cb)
    with learn.no_bar(): p1, _ = learn.get_preds()
    assert cb.multilabel is True
    ps, p0 = learn.trained_prior.priors, p0.double()
    b = p0 * .5 / ps; b = b / (b + (1 - p0) * .5 / (1 - ps))
    assert torch.allclose(p1.double(), b, atol=1e-5)  # one binary Bayes rule per label, not a softmax over labels


def test_label_never_positive_in_training_raises(ml_path):
    from fastai_imbalance.training import TrainedPrior
    dls = ml_dls(ml_path)
    learn = vision_learner(dls, tiny_arch, pretrained=False)
    pr = class_priors(dls).double().clone(); pr[3] = 0.
    learn.trained_prior = TrainedPrior(pr, 'sigmoid', 'a training set without label 3')
    learn.add_cb(PriorShift('uniform'))
    with pytest.raises(ValueError, match=re.escape('the source prior of class [3] is 0: the model never saw it present in training')), learn.no_bar():
        learn.get_preds()


def test_export_before_any_prediction(lt_path, tmp_path):
    dls = ImageDataLoaders.from_folder(lt_path, valid='valid', bs=32, num_workers=0)
    img = next((lt_path/'valid'/'9').glob('*.png'))
    learn = vision_learner(dls, tiny_arch, pretrained=False)
    with learn.no_bar(), learn.no_logging(): learn.fit(1)
    learn.add_cb(PriorShift('uniform'))
    learn.export(tmp_path/'a.pkl')  # nothing predicted yet
    assert torch.allclose(load_learner(tmp_path/'a.pkl').predict(img)[2], learn.predict(img)[2], atol=1e-6)
    fresh = vision_learner(dls, tiny_arch, pretrained=False, cbs=PriorShift('uniform'))  # never fit: the source is the training counts
    fresh.export(tmp_path/'b.pkl')
    l2 = load_learner(tmp_path/'b.pkl')
    cb = next(c for c in l2.cbs if isinstance(c, PriorShift))
    assert torch.allclose(cb._src, class_priors(dls).double())
    assert torch.allclose(l2.predict(img)[2], fresh.predict(img)[2], atol=1e-6)


def test_shift_at_inference_only_by_default(lt_path):
    dls = ImageDataLoaders.from_folder(lt_path, valid='valid', bs=32, num_workers=0)
    set_seed(0)
    learn = vision_learner(dls, tiny_arch, pretrained=False, cbs=PriorShift('uniform'))
    with learn.no_bar(), learn.no_logging(): learn.fit(1)
    recorded = learn.recorder.values[-1][1]
    with learn.no_bar(): shifted, _ = learn.get_preds(); v_with = learn.validate()[0]
    cb = next(c for c in learn.cbs if isinstance(c, PriorShift)); learn.remove_cb(cb)
    with learn.no_bar(): plain, _ = learn.get_preds(); v_without = learn.validate()[0]
    assert np.isclose(recorded, v_without, rtol=1e-5) and np.isclose(v_with, v_without, rtol=1e-6)  # valid loss is the model's own
    assert not torch.allclose(shifted, plain, atol=1e-3)  # predictions are shifted
    learn.add_cb(PriorShift('uniform', in_validation=True))
    with learn.no_bar(): v_shifted = learn.validate()[0]
    assert not np.isclose(v_shifted, v_without, rtol=1e-3)


def _mle_reference(P, src):
    "The maximum-likelihood priors by SLSQP (scipy), converged far past EM's tolerance"
    from scipy.optimize import minimize
    P, src = P.double().numpy(), src.double().numpy()
    f = lambda pi: -np.log(P @ (pi / src)).mean()
    g = lambda pi: -(P / src).T @ (1 / (P @ (pi / src))) / len(P)
    k = P.shape[1]
    r = minimize(f, np.full(k, 1 / k), jac=g, method='SLSQP', bounds=[(0, 1)] * k,
                 constraints=[dict(type='eq', fun=lambda p: p.sum() - 1, jac=lambda p: np.ones_like(p))], options=dict(ftol=1e-15, maxiter=2000))
    return torch.as_tensor(r.x), -r.fun


@pytest.mark.parametrize('seed', range(2))
def test_em_reaches_the_maximum_likelihood_on_sparse_posteriors(seed):
    "Nearly one-hot rows (Dirichlet(0.02)) over 50 classes, half of them rare: the maximum lies near the boundary, where EM crawls and a step-size rule stops early"
    g = np.random.default_rng(seed)
    k = 50
    P = g.dirichlet(np.full(k, .02), size=3000) * np.where(np.arange(k) < k // 2, 1., .02)
    P = torch.as_tensor(P / P.sum(1, keepdims=True))
    src = torch.full((k,), 1 / k, dtype=torch.float64)
    pi = em_priors(P, src)
    ref, ll_ref = _mle_reference(P, src)
    ll = np.log((P @ (pi / src)).numpy()).mean()
    # measured: the step-size rule (tol 1e-6) stopped 1.0e-4 / 2.7e-4 (L1) and 3e-7 / 5e-7 (log-likelihood) short; the duality gap, 1e-7 and 2e-8
    assert ll >= ll_ref - 1e-7, (ll, ll_ref)
    assert (pi - ref).abs().sum() < 1e-5, (pi - ref).abs().sum()


@pytest.mark.parametrize('dtype', [torch.float64, torch.float32])
def test_em_converges_when_a_class_is_absent(dtype):
    "The maximum puts absent classes at the floor: the stopping certificate allows for it (it used to run 10,000 steps and warn)"
    rng = np.random.default_rng(1)
    n, k = 50_000, 10
    y = rng.choice(k, n, p=rng.dirichlet(np.ones(k)))
    z = rng.normal(size=(n, k)); z[np.arange(n), y] += 3
    P = torch.softmax(torch.tensor(z), 1)
    src = torch.full((k,), .1, dtype=torch.float64)
    with warnings.catch_warnings():
        warnings.simplefilter('error')
        pi = em_priors(P.to(dtype), src)
    ref, _ = _mle_reference(P, src)
    ll = lambda p: float(torch.log(P @ (p / src)).mean())
    assert ll(ref) - ll(pi) < 1e-5  # what the stop certifies (the default tol)
    assert (pi - ref).abs().sum() < 3e-5 and pi.min() < 1e-6  # the priors, near it (measured 1.2e-5 in L1; 6e-8 at tol=1e-7); some class sits at the floor


def test_em_multilabel_float32_with_a_saturated_label():
    "float32 sigmoids of 1.0 everywhere for one label: float32 rounds 1 - floor to 1, which made the certificate NaN and EM run 10,000 passes"
    g = torch.Generator().manual_seed(0)
    P = torch.rand(2000, 4, generator=g)
    P[:, 2] = 1.0
    src = torch.tensor([.2, .3, .5, .4], dtype=torch.float64)
    with warnings.catch_warnings():
        warnings.simplefilter('error')
        pi = em_priors(P.float(), src, multilabel=True)
    assert torch.isfinite(pi).all() and pi[2] > 1 - 1e-6 and pi[2] < 1


def test_em_refuses_an_impossible_floor():
    with pytest.raises(ValueError, match=re.escape('floor=0.5 must lie in [0, 1/4)')): em_priors(torch.full((3, 4), .25), [.25] * 4, floor=.5)


@pytest.mark.parametrize('multilabel', [False, True])
@pytest.mark.parametrize('method', ['ts', 'bcts', 'vs'])
def test_calibration_gradients_match_autograd(method, multilabel):
    "The closed-form chunked gradients (no autograd graph, the 5,000-class path) against autograd's, at random parameters and chunk boundaries anywhere"
    from fastai_imbalance.priorshift import Calibration
    g = torch.Generator().manual_seed(0)
    n, k = 203, 7
    z = torch.randn(n, k, dtype=torch.float64, generator=g) * 3
    y = (torch.rand(n, k, generator=g) < .3).double() if multilabel else torch.randint(0, k, (n,), generator=g)
    c = Calibration(method, k, multilabel)
    c.log_t.fill_(.3); c.b.copy_(torch.randn(k, dtype=torch.float64, generator=g)); c.w.uniform_(.5, 2, generator=g)
    names = {'ts': ['log_t'], 'bcts': ['log_t', 'b'], 'vs': ['w', 'b']}[method]
    ps = [p.requires_grad_() for p in c._params()]
    ref = c._nll(z, y); ref.backward(); ref = ref.item()
    for p in ps: p.requires_grad_(False)
    for chunk in (1, 64, 1000):
        nll, grads = c._nll_grad(z, y, chunk)
        assert float(nll) == pytest.approx(ref, rel=1e-12)
        for p, nm in zip(ps, names): torch.testing.assert_close(grads[nm], p.grad, rtol=1e-10, atol=1e-13)


@pytest.mark.parametrize('method', ['ts', 'bcts', 'vs'])
def test_calibration_reaches_the_autograd_optimum(method):
    "The preconditioned, warm-started fit reaches the NLL that a long plain L-BFGS run on autograd's NLL reaches"
    from fastai_imbalance.priorshift import Calibration
    g = torch.Generator().manual_seed(1)
    n, k = 1500, 40
    y = torch.randint(0, k, (n,), generator=g)
    z = torch.randn(n, k, dtype=torch.float64, generator=g) * 2 + torch.randn(k, dtype=torch.float64, generator=g)
    z[torch.arange(n), y] += 3
    fit = Calibration(method, k).fit(z, y)
    ref = Calibration(method, k); ps = [p.requires_grad_() for p in ref._params()]
    opt = torch.optim.LBFGS(ps, lr=.5, max_iter=3000, tolerance_grad=1e-12, tolerance_change=1e-15, line_search_fn='strong_wolfe')
    def closure():
        opt.zero_grad(); l = ref._nll(z, y); l.backward(); return l
    opt.step(closure)
    assert float(fit._nll(z, y)) - float(ref._nll(z, y).detach()) < 1e-8
    if method != 'vs': assert float(fit.log_t) == pytest.approx(float(ref.log_t.detach()), abs=1e-4)
    # the large-logit path: float32 arithmetic above 2^22 entries, the same calibration to float32 precision
    big = z.repeat(75, 1); yb = y.repeat(75)
    assert big.numel() > 2**22
    f32 = Calibration(method, k).fit(big.float(), yb)
    if method != 'vs': assert float(f32.log_t) == pytest.approx(float(fit.log_t), abs=1e-3)


@pytest.mark.parametrize('margin', [30, 1000])
def test_calibration_of_an_overconfident_model(margin):
    "A saturated softmax (right on 90% of items by a margin of 30 or 1000) has almost no curvature at T=1: BCTS/VS must still reach TS's NLL or better (BCTS once stopped at T=1 there)"
    import torch.nn.functional as F
    g = torch.Generator().manual_seed(0); n, k = 600, 10
    y = torch.randint(0, k, (n,), generator=g)
    z = torch.randn(n, k, generator=g); t = torch.where(torch.rand(n, generator=g) < .9, y, torch.randint(0, k, (n,), generator=g))
    z[torch.arange(n), t] += margin
    nll = {m: F.cross_entropy(calibrate(z, y, m)(z.double()), y).item() for m in ('ts', 'bcts', 'vs')}
    assert nll['ts'] < 0.52 and nll['bcts'] <= nll['ts'] + 1e-6 and nll['vs'] <= nll['ts'] + 1e-6, nll
