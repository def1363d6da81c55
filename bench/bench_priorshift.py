"""PriorShift on the long-tailed digits: estimating unknown target priors, and what correcting for them buys.

    python bench/bench_priorshift.py [--shifts 100] [--epochs 10] [--n-test 500] [--no-speed | --speed-only]

A resnet18 (pretrained=False) is trained on digits_lt(imbalance=100). The balanced validation scans are split
in two: 25 per digit label the calibration (and BBSE's confusion matrix); the other 25 per digit are the pool
from which `--shifts` test sets of `--n-test` images are drawn with class priors ~ Dirichlet(1). The model's
logits are computed once per image, so every method sees identical predictions. Printed, mean over shifts:
L1 error of the estimated priors (EM after BCTS, EM without calibration, BBSE), and accuracy without
correction, with EM+BCTS-estimated priors, and with two oracles: each test set's exact class frequencies, and
the Dirichlet priors it was drawn from (the gaps with their standard error over the shifts; 10 shifts leave about
1 point of noise on the gap); then where the gap to the oracle comes from (4x larger test sets; calibration fitted
in-sample; exactly calibrated synthetic posteriors; temperature and vector scaling instead of BCTS). Then uniform-target PriorShift on the whole balanced
validation set, and EM's speed on 100,000 x 1,000 probabilities (two kinds) against the textbook numpy loop,
both scored against the maximum-likelihood priors, certified by their duality gap (`--no-speed` skips this part, about 3 minutes;
`--speed-only` runs only it).
"""
import argparse, time, warnings
warnings.filterwarnings('ignore')
import numpy as np, torch
from sklearn.metrics import balanced_accuracy_score
from fastai.vision.all import *
from fastai_imbalance.all import *
from fastai_imbalance.priorshift import calibrate, em_priors, bbse_priors, prior_shift_logits, PriorShift, noop_act


def em_numpy(P, src, tol=1e-6, max_iter=1000):
    "The textbook EM (Saerens et al. 2002) in plain numpy: reweight every posterior, renormalise, average"
    pi = src.copy()
    for _ in range(max_iter):
        W = P * (pi / src)
        W /= W.sum(1, keepdims=True)
        new = W.mean(0)
        if np.abs(new - pi).max() < tol: return new
        pi = new
    return pi


def main(shifts=100, epochs=10, n_test=500, seed=0, speed=True):
    torch.set_num_threads(2)
    path = digits_lt(imbalance=100)
    set_seed(seed, reproducible=True)
    dls = ImageDataLoaders.from_folder(path, valid='valid', bs=32, num_workers=0)
    learn = vision_learner(dls, resnet18, pretrained=False)
    with learn.no_bar(), learn.no_logging(): learn.fit_one_cycle(epochs, 3e-3)
    with learn.no_bar(): z, y = learn.get_preds(act=noop_act)
    z, y = z.double(), y.long()
    rng = np.random.default_rng(seed)
    cal_idx, pool_idx = [], []
    for c in range(10):
        i = rng.permutation(np.flatnonzero(y.numpy() == c)); cal_idx += list(i[:25]); pool_idx += list(i[25:])
    cal_idx, pool_idx = np.array(cal_idx), np.array(pool_idx)
    cal = calibrate(z[cal_idx], y[cal_idx], 'bcts')
    vp = cal(z[cal_idx]).softmax(1)
    src_cal = vp.mean(0)                                        # source priors of the calibrated model
    src_train = class_priors(dls).double()
    def shifts_eval(cal, src, pool, n_test, r=None):
        "Mean over `shifts` Dirichlet(1) test sets drawn from `pool` (with generator `r`, default the bench's): prior errors and accuracies"
        r, rows = r or rng, []
        for s in range(shifts):
            pi = r.dirichlet(np.ones(10))
            cls = r.choice(10, n_test, p=pi)
            idx = np.array([r.choice(pool[y[pool].numpy() == c]) for c in cls])
            zt, yt = z[idx], y[idx]
            true = torch.bincount(yt, minlength=10).double() / n_test
            em_cal = em_priors(cal(zt).softmax(1), src)
            em_raw = em_priors(zt.softmax(1), src_train)
            bbse = bbse_priors(vp, y[cal_idx], cal(zt).softmax(1))
            acc = lambda logits: (logits.argmax(1) == yt).double().mean().item()
            rows.append(dict(l1_em_bcts=(em_cal - true).abs().sum().item(), l1_em_raw=(em_raw - true).abs().sum().item(),
                             l1_bbse=(bbse - true).abs().sum().item(),
                             acc_plain=acc(zt), acc_em_bcts=acc(prior_shift_logits(cal(zt), em_cal, src)),
                             acc_oracle=acc(prior_shift_logits(cal(zt), true, src)),
                             acc_oracle_pi=acc(prior_shift_logits(cal(zt), torch.as_tensor(pi), src))))
        for r in rows: r.update(gap=r['acc_em_bcts'] - r['acc_oracle'], gap_pi=r['acc_em_bcts'] - r['acc_oracle_pi'])
        return {k: np.mean([r[k] for r in rows]) for k in rows[0]}, {k: np.std([r[k] for r in rows]) for k in rows[0]}
    se = lambda sd, k: 100 * sd[k] / np.sqrt(shifts)  # standard error of a mean over the shifts, in points
    m, sd = shifts_eval(cal, src_cal, pool_idx, n_test)
    print(f'{shifts} test sets of {n_test} images, class priors ~ Dirichlet(1); resnet18 trained {epochs} epochs on digits_lt(100)')
    print(f'  L1 error of estimated priors: EM+BCTS {m["l1_em_bcts"]:.3f} ± {sd["l1_em_bcts"]:.3f}   EM uncalibrated {m["l1_em_raw"]:.3f} ± {sd["l1_em_raw"]:.3f}   BBSE {m["l1_bbse"]:.3f} ± {sd["l1_bbse"]:.3f}')
    print(f'  accuracy: uncorrected {m["acc_plain"]:.3f}   EM+BCTS priors {m["acc_em_bcts"]:.3f}   oracle priors {m["acc_oracle"]:.3f}   '
          f'(EM+BCTS - oracle = {100*m["gap"]:+.1f} ± {se(sd, "gap"):.1f} points (standard error); vs uncorrected {100*(m["acc_em_bcts"]-m["acc_plain"]):+.1f})')
    # the oracle above knows each test set's exact class frequencies, zeros included (a class absent by chance is never
    # predicted); the Bayes classifier for the distribution the test set was drawn from knows only the Dirichlet priors
    print(f'  oracle with the Dirichlet priors each test set was drawn from: {m["acc_oracle_pi"]:.3f} '
          f'(EM+BCTS - this oracle = {100*m["gap_pi"]:+.1f} ± {se(sd, "gap_pi"):.1f} points)')
    # where the gap to the oracle comes from: more test images do not close it; in-sample calibration barely does
    m4, _ = shifts_eval(cal, src_cal, pool_idx, 4 * n_test)
    cal_in = calibrate(z[pool_idx], y[pool_idx], 'bcts')
    mi, _ = shifts_eval(cal_in, cal_in(z[pool_idx]).softmax(1).mean(0), pool_idx, n_test)
    print(f'  diagnosis: test sets of {4*n_test}: EM+BCTS L1 {m4["l1_em_bcts"]:.3f}, gap to oracle {100*(m4["acc_em_bcts"]-m4["acc_oracle"]):+.1f} points ({100*(m4["acc_em_bcts"]-m4["acc_oracle_pi"]):+.1f} to the Dirichlet-prior oracle); '
          f'BCTS fitted on the test pool itself: L1 {mi["l1_em_bcts"]:.3f}, gap {100*(mi["acc_em_bcts"]-mi["acc_oracle"]):+.1f} ({100*(mi["acc_em_bcts"]-mi["acc_oracle_pi"]):+.1f})')
    # the same protocol on exactly calibrated synthetic posteriors of similar accuracy: EM alone
    accs, gaps, l1s = [], [], []
    for s in range(shifts):
        pi = torch.as_tensor(rng.dirichlet(np.ones(10)))
        P, yt = calibrated_posteriors(n_test, pi, torch.full((10,), .1, dtype=torch.float64), a=2.5, seed=s)
        true = torch.bincount(yt, minlength=10).double() / n_test
        est = em_priors(P, torch.full((10,), .1))
        acc = lambda p: (p.argmax(1) == yt).double().mean().item()
        l1s.append((est - true).abs().sum().item()); accs.append(acc(P))
        gaps.append(acc(P * est) - acc(P * true))
    print(f'  exactly calibrated synthetic posteriors (uncorrected accuracy {np.mean(accs):.3f}): EM L1 {np.mean(l1s):.3f}, '
          f'gap to oracle {100*np.mean(gaps):+.1f} points')
    # the calibrations of `calibrate`, each on the same fresh shifts (a paired comparison)
    res = []
    for method in ('ts', 'bcts', 'vs'):
        c = calibrate(z[cal_idx], y[cal_idx], method)
        mc, sc = shifts_eval(c, c(z[cal_idx]).softmax(1).mean(0), pool_idx, n_test, np.random.default_rng(seed + 1))
        res.append(f'EM+{method.upper()} L1 {mc["l1_em_bcts"]:.3f}, accuracy {mc["acc_em_bcts"]:.3f} (oracle {mc["acc_oracle"]:.3f}, gap {100*mc["gap"]:+.1f} ± {se(sc, "gap"):.1f})')
    print(f'  calibrations on the same {shifts} fresh shifts: ' + '; '.join(res))
    # uniform target on the balanced validation set, through the callback
    with learn.no_bar(): p0, yv = learn.get_preds()
    learn.add_cb(PriorShift('uniform'))
    with learn.no_bar(): p1, _ = learn.get_preds()
    print(f'  balanced validation set: balanced accuracy plain {balanced_accuracy_score(yv, p0.argmax(1)):.3f}, '
          f'PriorShift(uniform) {balanced_accuracy_score(yv, p1.argmax(1)):.3f}')
    if speed: em_speed()


def calibrated_posteriors(n, pi_t, pi_s, a=2., seed=0):
    "x = a*onehot(y) + N(0, I), y ~ pi_t: p(y|x) under pi_s is softmax(a*x + log pi_s), exactly calibrated"
    g = torch.Generator().manual_seed(seed)
    y = torch.multinomial(torch.as_tensor(pi_t).float(), n, replacement=True, generator=g)
    x = torch.randn(n, len(pi_s), generator=g); x[torch.arange(n), y] += a
    return (a * x + torch.log(torch.as_tensor(pi_s)).float()).softmax(1), y


def em_speed(n=100_000, k=1000):
    "EM on n x k probabilities: ours vs the textbook numpy loop, both at tol 1e-6, each scored against the exact MLE"
    g = np.random.default_rng(1)
    src = np.full(k, 1 / k)
    cases = {'Dirichlet(0.05) rows (ambiguous, slow EM)': torch.from_numpy(g.dirichlet(np.full(k, 0.05), size=n).astype(np.float32)),
             'calibrated model, 72% top-1, Dirichlet(1) shift': calibrated_posteriors(n, g.dirichlet(np.ones(k)), torch.tensor(src), a=4.)[0]}
    for name, P in cases.items():
        Pd = P.double()
        mle = em_priors(Pd, src, tol=1e-12, max_iter=2000)  # certified: its duality gap (printed) bounds how far its log-likelihood is below the maximum
        ll = lambda p: float(torch.log(Pd @ (torch.as_tensor(np.asarray(p), dtype=torch.float64) / torch.as_tensor(src))).mean())
        g = (Pd.t() @ (1 / (Pd @ (mle / torch.as_tensor(src))))) / n / torch.as_tensor(src)
        t = time.perf_counter(); ours = em_priors(P, src); t_ours = time.perf_counter() - t
        t = time.perf_counter(); ref = em_numpy(Pd.numpy(), src); t_ref = time.perf_counter() - t
        l1 = lambda p: np.abs(np.asarray(p) - mle.numpy()).sum()
        print(f'  EM on {n:,} x {k:,}, {name}: em_priors {t_ours:.2f} s (target <= 1 s), plain numpy (step size < 1e-6) {t_ref:.2f} s: '
              f'{t_ref/t_ours:.1f}x faster; L1 distance to the MLE: ours {l1(ours):.1e}, numpy {l1(ref):.1e}; '
              f'log-likelihood below the MLE\'s: ours {ll(mle) - ll(ours):.1e}, numpy {ll(mle) - ll(ref):.1e} (the MLE\'s own duality gap {float(g.max()) - 1:.1e})')


if __name__ == '__main__':
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument('--shifts', type=int, default=100)
    ap.add_argument('--epochs', type=int, default=10)
    ap.add_argument('--n-test', type=int, default=500)
    ap.add_argument('--no-speed', action='store_true', help="skip EM's speed comparison (about 3 minutes)")
    ap.add_argument('--speed-only', action='store_true', help="only EM's speed comparison")
    a = ap.parse_args()
    if a.speed_only: torch.set_num_threads(2); em_speed()
    else: main(a.shifts, a.epochs, a.n_test, speed=not a.no_speed)
