"Every metric, `class_report` and `threshold_for` on fastai's tabular learners, whose targets come as `(bs, 1)` category codes against `(bs, C)` predictions."
import warnings
import numpy as np, pandas as pd, pytest, torch
from sklearn import metrics as skm
from imblearn.metrics import geometric_mean_score
from fastai.tabular.all import TabularDataLoaders, tabular_learner, Categorify, FillMissing, Normalize, CategoryBlock, set_seed
import fastai.metrics as fm
from fastai_imbalance.all import *

pytestmark = pytest.mark.filterwarnings('ignore:.*(skipped class|is predicted but absent|is undefined).*')


def frame(n=600, classes=('common', 'rare'), rare=.1, seed=0):
    "A small imbalanced table: two continuous columns, one categorical, and a string target whose rare classes depend on them"
    rng = np.random.default_rng(seed)
    df = pd.DataFrame({'a': rng.normal(size=n), 'b': rng.normal(size=n), 'k': rng.choice(['u', 'v', 'w'], n)})
    score = df.a + 0.7 * (df.k == 'u') + rng.normal(scale=.6, size=n)
    y = np.zeros(n, np.int64)
    for i,q in enumerate(np.quantile(score, 1 - rare * np.arange(1, len(classes))[::-1] / (len(classes) - 1))): y[score >= q] = i + 1
    df['y'] = np.asarray(classes)[y]
    return df


def learner(df, metrics):
    dls = TabularDataLoaders.from_df(df, procs=[Categorify, FillMissing, Normalize], cat_names=['k'], cont_names=['a', 'b'], y_names='y',
                                     y_block=CategoryBlock(), bs=64, valid_idx=list(range(400, len(df))))
    set_seed(0)
    return tabular_learner(dls, layers=[16], metrics=metrics)


def fit(learn):
    with learn.no_bar(), learn.no_logging(): learn.fit(1, 1e-2)
    vals = learn.recorder.values[-1][2:]
    learn.metrics = []
    p, y = learn.get_preds()
    return vals, p, y


def test_tabular_binary_learner_every_metric_class_report_and_threshold():
    df = frame()
    mets = [BalancedAccuracy(), MacroF1(), MacroF1(average='weighted'), GMean(), CohenKappa(), RocAuc(), RocAuc(max_fpr=.2), AveragePrecision(),
            SensitivityAtSpecificity(.9), SpecificityAtSensitivity(.8), RocAuc(thresholds=100), fm.BalancedAccuracy()]
    learn = learner(df, mets)
    xb, yb = learn.dls.one_batch()[:2], learn.dls.one_batch()[2]
    assert yb.shape == (64, 1) and not yb.is_floating_point()  # fastai's tabular targets: one column of category codes
    vals, p, y = fit(learn)
    assert p.shape == (200, 2) and y.shape == (200, 1)
    y, yp, s = y[:, 0].long().numpy(), p.argmax(1).numpy(), p[:, 1].numpy()
    assert 0 < y.sum() < len(y) / 4  # rare positives in the validation rows
    fpr, tpr, _ = skm.roc_curve(y, s, drop_intermediate=False)
    refs = [skm.balanced_accuracy_score(y, yp), skm.f1_score(y, yp, average='macro'), skm.f1_score(y, yp, average='weighted'), geometric_mean_score(y, yp),
            skm.cohen_kappa_score(y, yp), skm.roc_auc_score(y, s), skm.roc_auc_score(y, s, max_fpr=.2), skm.average_precision_score(y, s),
            tpr[fpr <= .1 + 1e-12].max(), (1 - fpr[tpr >= .8 - 1e-12]).max(), skm.roc_auc_score(y, s), skm.balanced_accuracy_score(y, yp)]
    for m, v, r in zip(mets, vals, refs): assert v == pytest.approx(r, abs=1e-6 if m.name != 'roc_auc_binned_100' else m.error_bound + 1e-6), (m.name, v, r)
    rep = learn.class_report()
    assert list(rep.index) == ['common', 'rare'] and list(rep.support) == [int((y == 0).sum()), int((y == 1).sum())]
    assert rep.loc['rare', 'recall'] == pytest.approx(skm.recall_score(y, yp)) and list(rep.train) == [int((df.y[:400] == c).sum()) for c in ('common', 'rare')]
    r = learn.threshold_for(specificity=.9)
    assert r['specificity'] >= .9 and r['sensitivity'] == pytest.approx(tpr[fpr <= .1 + 1e-12].max(), abs=1e-6)
    assert int(r['confusion'].values.sum()) == len(y)
    interp = ImbalanceInterpretation.from_learner(learn)
    assert list(interp.vocab) == ['common', 'rare'] and interp.targs.shape == (200,)


def test_tabular_multiclass_learner_every_metric():
    df = frame(classes=('a', 'b', 'c'), rare=.2, seed=1)
    mets = [BalancedAccuracy(), MacroF1(), MacroF1(average=None), GMean(), CohenKappa(weights='quadratic'), RocAuc(), RocAuc(multi_class='ovo'),
            AveragePrecision(), RocAuc(average=None)]
    vals, p, y = fit(learner(df, mets))
    y, yp, pn = y[:, 0].long().numpy(), p.argmax(1).numpy(), p.numpy()
    Y = np.eye(3)[y]
    refs = [skm.balanced_accuracy_score(y, yp), skm.f1_score(y, yp, average='macro'), skm.f1_score(y, yp, average=None), geometric_mean_score(y, yp),
            skm.cohen_kappa_score(y, yp, weights='quadratic', labels=range(3)), skm.roc_auc_score(y, pn, multi_class='ovr'),
            skm.roc_auc_score(y, pn, multi_class='ovo'), skm.average_precision_score(Y, pn), skm.roc_auc_score(y, pn, multi_class='ovr', average=None)]
    for m, v, r in zip(mets, vals, refs): np.testing.assert_allclose(v, r, atol=1e-6, err_msg=m.name)
