"Every Learner, not only vision: tabular (`TabularDataLoaders` + `tabular_learner`) and plain-tensor (`Learner(dls, model)`) data, end to end."
import re, warnings
import numpy as np, pandas as pd, pytest, torch
from torch import nn
from torch.utils.data import TensorDataset
from fastai.tabular.all import (TabularDataLoaders, TabularPandas, tabular_learner, Categorify, FillMissing, Normalize, CategoryBlock,
                                TabDataLoader, RandomSplitter, Callback, CrossEntropyLossFlat, SaveModelCallback, load_learner, set_seed)
from fastai.data.core import DataLoaders
from fastai.learner import Learner
from fastai_imbalance.core import class_counts, class_weights, item_labels
from fastai_imbalance.data import ResampledDL, ResampledTabDataLoader, resampled_type
from fastai_imbalance.finetune import BalancedFinetune, ProgressiveBalancing
from fastai_imbalance.metrics import BalancedAccuracy
from fastai_imbalance.priorshift import PriorShift, trained_prior, prior_shift_logits
from fastai_imbalance.training import prior_file


def quiet_fit(learn, n, **kw):
    with learn.no_bar(), learn.no_logging(): learn.fit(n, **kw)


def frame(n=3000, pos=0.03, classes=('neg', 'pos'), seed=0):
    "An imbalanced table: two continuous columns, one categorical, and a target whose rare classes depend on them"
    rng = np.random.default_rng(seed)
    df = pd.DataFrame({'a': rng.normal(size=n), 'b': rng.normal(size=n), 'k': rng.choice(['u', 'v', 'w'], n)})
    score = df.a + 0.5 * (df.k == 'u') + rng.normal(scale=0.5, size=n)
    qs = np.quantile(score, np.cumsum([pos] * (len(classes) - 1))[::-1] * -1 + 1)  # the top `pos` share is the rarest class, and so on
    y = np.zeros(n, np.int64)
    for i,q in enumerate(qs): y[score >= q] = i + 1
    df['y'] = np.asarray(classes)[y]
    return df


def tab_dls(df, bs=64, **kw):
    return TabularDataLoaders.from_df(df, procs=[Categorify, FillMissing, Normalize], cat_names=['k'], cont_names=['a', 'b'], y_names='y',
                                      bs=bs, valid_idx=list(range(int(len(df) * 0.8), len(df))), **kw)


@pytest.fixture(scope='module')
def df(): return frame()

@pytest.fixture
def dls(df): return tab_dls(df)


# --- counts read from the TabularPandas target, not the frame's columns ---

def test_counts_are_the_target_column(df, dls):
    n = int(len(df) * 0.8)
    for split,rows in (('train', df.y.iloc[:n]), ('valid', df.y.iloc[n:])):
        c = class_counts(dls, split=split)
        assert list(c.index) == list(dls.vocab)
        assert c.to_dict() == rows.value_counts().reindex(list(dls.vocab), fill_value=0).to_dict()
    assert class_counts(dls.train_ds).to_dict() == class_counts(dls).to_dict()
    assert class_counts(dls.train).attrs['n_items'] == n
    w = class_weights(dls)
    c = class_counts(dls).values
    assert torch.allclose(w, torch.tensor(c.sum() / (len(c) * c), dtype=torch.float32))


def test_three_classes_three_columns_are_not_confused(df):
    "Equal numbers of columns and classes once hid the bug: the counts must be the target's"
    d3 = frame(classes=('a0', 'a1', 'a2'), pos=0.05)
    dls = tab_dls(d3)
    c = class_counts(dls)
    assert c.to_dict() == d3.y.iloc[:len(d3) * 4 // 5].value_counts().reindex(list(dls.vocab)).to_dict()
    assert c.min() < 0.1 * c.max()


def test_counts_of_a_tabular_pandas_by_split(df):
    to = TabularPandas(df, procs=[Categorify, Normalize], cat_names=['k'], cont_names=['a', 'b'], y_names='y', y_block=CategoryBlock(),
                       splits=RandomSplitter(seed=0)(range(len(df))))
    y = to.train.items['y']
    assert class_counts(to, split='train').to_dict() == {v: int((y == i).sum()) for i,v in enumerate(to.vocab)}
    assert class_counts(to, split=None).sum() == len(df)
    with pytest.raises(ValueError, match="has 2 splits"): class_counts(to, split=2)


def test_a_regression_target_is_refused_with_advice():
    d = frame(); d['y'] = (d.y == 'pos').astype(int)  # a numeric y: fastai makes it a regression target
    dls = tab_dls(d)
    with pytest.raises(TypeError, match=re.escape("pass y_block=CategoryBlock()")): class_counts(dls)


@pytest.mark.parametrize('target', ['continuous', 'zero_one'])
def test_a_regression_learner_is_refused_by_the_reports(target):
    "A regression learner's one output per item is not a two-class score: class_report, threshold_for and ImbalanceInterpretation say so"
    from fastai.tabular.all import RegressionBlock
    from fastai_imbalance.interpret import ImbalanceInterpretation
    set_seed(0)
    d = frame(n=600)
    d['y'] = d.a * 3 + 1 if target == 'continuous' else (d.y == 'pos').astype(np.float32)
    dls = tab_dls(d, y_block=RegressionBlock())
    learn = tabular_learner(dls, layers=[8])
    if target == 'zero_one':  # 0/1 targets, unbounded outputs: not probabilities
        with torch.no_grad(): learn.model.layers[-1][0].bias.fill_(3.)
    quiet_fit(learn, 1)
    what = "the learner's loss is MSELoss, a regression loss"
    for call in (lambda: learn.class_report(), lambda: learn.threshold_for(specificity=0.9),
                 lambda: ImbalanceInterpretation.from_learner(learn)):
        with learn.no_bar(), pytest.raises(ValueError, match=re.escape(what) + ".*y_block=CategoryBlock"): call()



def _tensor_learner(x, y, model, loss_func, n_train=200):
    dls = DataLoaders.from_dsets(TensorDataset(x[:n_train], y[:n_train]), TensorDataset(x[n_train:], y[n_train:]), bs=32)
    return Learner(dls, model, loss_func=loss_func)

def _reports(learn):
    from fastai_imbalance.interpret import ImbalanceInterpretation
    return (lambda: learn.class_report(), lambda: learn.threshold_for(specificity=0.9), lambda: ImbalanceInterpretation.from_learner(learn))


@pytest.mark.parametrize('case', ['two_outputs_codes', 'two_outputs_zero_one', 'one_output_in_0_1'])
def test_regression_learners_whose_outputs_look_like_scores_are_refused_by_their_loss(case):
    "Multi-output regression on class codes or 0/1 floats, and a one-output regression squashed into [0, 1]: the values pass, the loss does not"
    from fastai.tabular.all import RegressionBlock
    from fastai.losses import MSELossFlat
    set_seed(0)
    if case == 'one_output_in_0_1':  # tabular regression with y_range=(0, 1) on 0/1 targets: every output is a valid probability
        d = frame(n=600); d['y'] = (d.y == 'pos').astype(np.float32)
        learn = tabular_learner(tab_dls(d, y_block=RegressionBlock()), layers=[8], y_range=(0, 1))
        name = 'MSELoss'
    else:
        x = torch.randn(300, 4)
        y = torch.randint(0, 5, (300, 2)).float() if case == 'two_outputs_codes' else (x[:, :2] > 0).float()
        learn = _tensor_learner(x, y, nn.Linear(4, 2), MSELossFlat() if case == 'two_outputs_codes' else nn.L1Loss())
        name = 'MSELoss' if case == 'two_outputs_codes' else 'L1Loss'
    for call in _reports(learn):
        with learn.no_bar(), pytest.raises(ValueError, match=re.escape(f"the learner's loss is {name}, a regression loss") + ".*y_block=CategoryBlock"): call()


def test_targets_and_scores_are_checked_when_the_loss_is_unknown():
    "A hand-written loss says nothing: continuous targets, and one score per item that is not a probability, are refused by their values"
    set_seed(0)
    x = torch.randn(300, 4)
    def mse(out, y, reduction='mean'):
        l = (out.view(-1) - y) ** 2
        return l.mean() if reduction == 'mean' else l
    learn = _tensor_learner(x, x[:, 0] * 3 + 1, nn.Linear(4, 1), mse)
    for call in _reports(learn):
        with learn.no_bar(), pytest.raises(ValueError, match=re.escape("the targets include") + ".*y_block=CategoryBlock"): call()
    learn = _tensor_learner(x, (x[:, 0] > 0).float(), nn.Linear(4, 1), mse)
    with torch.no_grad(): learn.model.bias.fill_(3.)
    for call in _reports(learn):
        with learn.no_bar(), pytest.raises(ValueError, match=re.escape("must be probabilities, but the scores include")): call()


@pytest.mark.parametrize('outputs', [1, 3])
def test_torchs_bce_with_logits_is_refused_with_fastais_loss_as_the_fix(outputs):
    "torch's nn.BCEWithLogitsLoss gives fastai no sigmoid, so get_preds returns logits: the reports name BCEWithLogitsLossFlat"
    set_seed(0)
    x = torch.randn(300, 4)
    y = (x[:, :outputs] > 0).float() if outputs > 1 else (x[:, 0] > 0).float()[:, None]
    learn = _tensor_learner(x, y, nn.Linear(4, outputs), nn.BCEWithLogitsLoss())
    with torch.no_grad(): learn.model.bias.fill_(3.)
    with learn.no_bar(), pytest.raises(ValueError, match=re.escape("use fastai's loss_func=BCEWithLogitsLossFlat()")): learn.class_report()
    if outputs == 1:
        with learn.no_bar(), pytest.raises(ValueError, match=re.escape("use fastai's loss_func=BCEWithLogitsLossFlat()")): learn.threshold_for(specificity=0.9)
    from fastai.losses import BCEWithLogitsLossFlat
    learn.loss_func = BCEWithLogitsLossFlat()
    with learn.no_bar(): r = learn.class_report()
    assert r.support.sum() == (y[200:].sum() if outputs > 1 else len(y) - 200)


def test_items_the_loss_ignores_are_left_out_of_the_reports():
    "Targets equal to the loss's ignore_index (-100 by default) are not class 0: class_report and the interpretation leave them out, as the loss does"
    from sklearn.metrics import precision_recall_fscore_support, roc_curve
    from fastai_imbalance.interpret import ImbalanceInterpretation
    set_seed(0)
    x = torch.randn(400, 4)
    y = (x[:, 0] > 0.3).long() + (x[:, 1] > 1).long()
    y[200::7] = -100
    learn = _tensor_learner(x, y, nn.Linear(4, 3), CrossEntropyLossFlat())
    quiet_fit(learn, 1)
    with learn.no_bar(): p,t = learn.get_preds()
    k = t != -100
    with learn.no_bar(): r = learn.class_report()
    pr,rc,f1,sup = precision_recall_fscore_support(t[k].numpy(), p[k].argmax(1).numpy(), labels=[0, 1, 2], zero_division=0)
    assert r.loc[[0, 1, 2], 'support'].tolist() == sup.tolist() and int(r.support.sum()) == int(k.sum()) < 200
    np.testing.assert_allclose(r.loc[[0, 1, 2], 'recall'], rc, atol=1e-6); np.testing.assert_allclose(r.loc[[0, 1, 2], 'f1'], f1, atol=1e-6)
    with learn.no_bar(): interp = ImbalanceInterpretation.from_learner(learn)
    assert len(interp.targs) == int(k.sum()) and interp.confusion_matrix().sum() == int(k.sum())
    with learn.no_bar(): th = learn.threshold_for(specificity=0.9, pos=2)
    assert int(th['confusion'].values.sum()) == int(k.sum())
    fpr,tpr,thr = roc_curve((t[k] == 2).numpy(), p[k][:, 2].numpy(), drop_intermediate=False)
    i = np.flatnonzero(fpr <= 0.1 + 1e-12)[-1]
    assert th['sensitivity'] == pytest.approx(tpr[i]) and th['threshold'] == pytest.approx(min(thr[i], 1.))
    learn.loss_func = CrossEntropyLossFlat(ignore_index=7)  # a loss that ignores another value: -100 is an out-of-range code, refused by name
    with pytest.raises(ValueError, match=re.escape("the targets include -100, outside the model's classes 0 ... 2")):
        ImbalanceInterpretation(learn, learn.dls.valid, torch.zeros(len(t)), preds=p, targs=t)


def test_several_target_columns_under_one_categorize_are_refused(df):
    "fastai encodes every y column with the first one's vocab (-1 elsewhere): counts, weights and resampling refuse it, naming the columns"
    from fastai.tabular.all import MultiCategoryBlock
    d = df.copy(); d['y2'] = np.where(d.a > 1, 'hi', 'lo')
    dls = TabularDataLoaders.from_df(d, procs=[Categorify, Normalize], cat_names=['k'], cont_names=['a', 'b'], y_names=['y', 'y2'],
                                     y_block=CategoryBlock(), bs=64, valid_idx=list(range(2400, 3000)))
    for call in (lambda: class_counts(dls), lambda: class_weights(dls), lambda: dls.resampled('balanced')):
        with pytest.raises(ValueError, match=re.escape("2 target columns ['y', 'y2'] under one Categorize")): call()
    e = d.assign(pos=(d.y == 'pos').astype(np.int64), hi=(d.y2 == 'hi').astype(np.int64))  # one 0/1 column per label: a multilabel table
    mdls = TabularDataLoaders.from_df(e, procs=[Categorify, Normalize], cat_names=['k'], cont_names=['a', 'b'], y_names=['pos', 'hi'],
                                      y_block=MultiCategoryBlock(encoded=True, vocab=['pos', 'hi']), bs=64, valid_idx=list(range(2400, 3000)))
    c = class_counts(mdls)
    assert c.to_dict() == {'pos': int(e.pos[:2400].sum()), 'hi': int(e.hi[:2400].sum())}


# --- resampling keeps the loader's kind ---

def test_resampled_keeps_the_tabular_loader(dls):
    r = dls.resampled('balanced')
    assert isinstance(r.train, TabDataLoader) and isinstance(r.train, ResampledDL) and type(r.train) is ResampledTabDataLoader
    assert resampled_type(dls.train) is ResampledTabDataLoader and resampled_type(r.train) is ResampledTabDataLoader
    ys = torch.cat([b[2].view(-1) for b in r.train])
    assert len(ys) == r.train.n_draws - r.train.n_draws % r.train.bs
    frac = ys.float().mean().item()
    assert 0.4 < frac < 0.6, frac  # balanced: about half positives (3% in the data)
    assert r.valid is dls.valid
    v = torch.cat([b[2].view(-1) for b in r.train.new(shuffle=False, drop_last=False)])  # not training: every row once, in order
    assert torch.equal(v, torch.as_tensor(dls.train_ds.items['y'].to_numpy()))


def test_resampled_with_labels_and_progressive_balancing(dls):
    lab = np.asarray(item_labels(dls)[0])
    r = dls.resampled('oversample', labels=lab)
    assert type(r.train) is ResampledTabDataLoader and r.train.n_draws == 2 * np.bincount(lab).max()
    learn = tabular_learner(dls, layers=[8])
    quiet_fit(learn, 2, cbs=ProgressiveBalancing())
    assert learn.dls.train is dls.train
    assert torch.allclose(learn.trained_prior.priors, torch.tensor([.5, .5], dtype=torch.float64))


def test_export_of_a_resampled_tabular_learner(df, dls, tmp_path):
    learn = tabular_learner(dls.resampled('balanced'), layers=[8], path=tmp_path)
    quiet_fit(learn, 1)
    learn.add_cb(PriorShift('uniform'))
    p,_ = learn.get_preds()
    learn.export('m.pkl')
    l2 = load_learner(tmp_path/'m.pkl')
    assert type(l2.dls.train) is TabDataLoader  # nothing left to resample in an exported learner
    dl = l2.dls.test_dl(df.iloc[int(len(df) * 0.8):])  # the raw rows, processed by the exported procs
    p2,_ = l2.get_preds(dl=dl)
    assert torch.allclose(p, p2, atol=1e-6)


# --- BalancedFinetune on tabular_learner ---

class AtStage(Callback):
    order = BalancedFinetune.order + 1
    def before_epoch(self):
        if self.epoch == self.n_epoch - 1: self.w = {n: p.detach().clone() for n,p in self.model.named_parameters()}; self.dl = type(self.dls.train)


def test_balanced_finetune_trains_tabular_classifier(dls):
    set_seed(0)
    learn = tabular_learner(dls, layers=[16])
    quiet_fit(learn, 3, cbs=[BalancedFinetune(epochs=1), at := AtStage()])
    assert at.dl is ResampledTabDataLoader
    changed = {n for n,p in learn.model.named_parameters() if not torch.equal(p, at.w[n])}
    assert changed == {'layers.1.0.weight', 'layers.1.0.bias'}, changed  # TabularModel's last LinBnDrop: the classifier
    assert learn.dls.train is dls.train and all(p.requires_grad for p in learn.model.parameters())
    assert torch.allclose(learn.trained_prior.priors, torch.tensor([.5, .5], dtype=torch.float64))


def test_cached_stage_on_tabular(dls):
    "The cached stage through tabular_learner: two inputs per batch (categorical, continuous), (bs, 1) targets; validation keeps the whole model"
    set_seed(0)
    learn = tabular_learner(dls, layers=[16], metrics=BalancedAccuracy())
    full = learn.model
    quiet_fit(learn, 3, cbs=[BalancedFinetune(epochs=1, train='classifier', cache=True), at := AtStage()])
    changed = {n for n,p in learn.model.named_parameters() if not torch.equal(p, at.w[n])}
    assert changed == {'layers.1.0.weight', 'layers.1.0.bias'}, changed
    assert learn.model is full and learn.dls.train is dls.train and all(p.requires_grad for p in learn.model.parameters())
    assert torch.allclose(learn.trained_prior.priors, torch.tensor([.5, .5], dtype=torch.float64))
    assert len(learn.recorder.values) == 3 and all(np.isfinite(v[1]) for v in learn.recorder.values)


def test_balanced_finetune_drw_and_all_on_tabular(dls):
    learn = tabular_learner(dls, layers=[16])
    quiet_fit(learn, 3, cbs=BalancedFinetune(epochs=1, mode='drw'))
    c = torch.tensor(class_counts(dls).values, dtype=torch.float64)
    w = (1 - 0.9999) / (1 - 0.9999 ** c); w = w * 2 / w.sum()
    assert torch.allclose(learn.trained_prior.priors, (c * w) / (c * w).sum(), atol=1e-6)
    assert type(learn.loss_func) is CrossEntropyLossFlat and learn.loss_func.func.weight is None
    quiet_fit(learn, 3, cbs=BalancedFinetune(epochs=1, train='all'))
    quiet_fit(learn, 3, cbs=BalancedFinetune(epochs=1, train='classifier', reinit=True))


def test_balanced_finetune_refuses_before_the_first_epoch(dls):
    learn = tabular_learner(dls, layers=[16])
    with pytest.raises(ValueError, match="unknown strategy 'even'"): quiet_fit(learn, 3, cbs=BalancedFinetune(epochs=1, strategy='even'))
    assert learn.train_iter == 0 and learn.dls.train is dls.train


# --- PriorShift on tabular ---

def test_prior_shift_on_tabular_uses_the_training_prior():
    d3 = frame(classes=('a0', 'a1', 'a2'), pos=0.05)
    dls = tab_dls(d3)
    set_seed(0)
    learn = tabular_learner(dls, layers=[16])
    quiet_fit(learn, 2)
    z,_ = learn.get_preds(act=lambda x: x)
    c = torch.tensor(class_counts(dls).values, dtype=torch.float64)
    assert torch.allclose(learn.trained_prior.priors, c / c.sum())
    learn.add_cb(PriorShift('uniform'))
    p,_ = learn.get_preds()
    want = prior_shift_logits(z, torch.full((3,), 1 / 3, dtype=torch.float64), c / c.sum()).softmax(1)
    assert torch.allclose(p, want.float(), atol=1e-5)
    assert (p.argmax(1) != z.argmax(1)).any()  # the shift moves decisions toward the rare classes


# --- plain tensors: Learner(DataLoaders.from_dsets(TensorDataset ...), model) ---

def tensor_data(n=600, seed=0):
    g = torch.Generator().manual_seed(seed)
    y = torch.multinomial(torch.tensor([.8, .15, .05]), n, replacement=True, generator=g)
    x = torch.randn(n, 4, generator=g) + nn.functional.one_hot(y, 4).float() * 2
    return x, y


def test_plain_tensors_counts_tuples_and_tensor_dataset():
    x,y = tensor_data()
    want = np.bincount(y.numpy(), minlength=3).tolist()
    assert class_counts(TensorDataset(x, y)).tolist() == want
    assert class_counts(TensorDataset(x, y[:, None])).tolist() == want  # (n, 1) labels
    assert class_counts([(x[i], y[i]) for i in range(len(y))]).tolist() == want
    assert class_counts([(x[i].numpy(), int(y[i])) for i in range(len(y))]).tolist() == want
    dls = DataLoaders.from_dsets(TensorDataset(x[:500], y[:500]), TensorDataset(x[500:], y[500:]), bs=32)
    assert class_counts(dls).tolist() == np.bincount(y[:500].numpy(), minlength=3).tolist()
    assert class_counts(dls, split='valid').tolist() == np.bincount(y[500:].numpy(), minlength=3).tolist()
    with pytest.raises(TypeError, match="holds 1 tensor"): class_counts(TensorDataset(x))
    r = dls.resampled('balanced')
    assert type(r.train) is ResampledDL
    got = torch.cat([b[1] for b in r.train]).bincount(minlength=3).float()
    assert (got / got.sum() - 1 / 3).abs().max() < 0.1


def test_prior_shift_with_source_on_a_plain_learner():
    x,y = tensor_data()
    dls = DataLoaders.from_dsets(TensorDataset(x[:500], y[:500]), TensorDataset(x[500:], y[500:]), bs=32)
    learn = Learner(dls, nn.Linear(4, 3), loss_func=CrossEntropyLossFlat())
    learn.trained_prior = None
    src = torch.tensor([.8, .15, .05], dtype=torch.float64)
    learn.add_cb(PriorShift('uniform', source=src))
    p,_ = learn.get_preds()
    learn.remove_cb(PriorShift)
    z,_ = learn.get_preds(act=lambda o: o)
    assert torch.allclose(p, prior_shift_logits(z, torch.full((3,), 1 / 3, dtype=torch.float64), src).softmax(1).float(), atol=1e-6)


def test_prior_shift_source_needs_nothing_recorded():
    "A loss whose outputs cannot be told from its activation still works with explicit source priors"
    x,y = tensor_data()
    dls = DataLoaders.from_dsets(TensorDataset(x[:500], y[:500]), TensorDataset(x[500:], y[500:]), bs=32)
    learn = Learner(dls, nn.Linear(4, 3), loss_func=lambda out, targ: nn.functional.cross_entropy(out, targ))
    with pytest.raises(ValueError, match="pass source= priors"):
        learn.add_cb(PriorShift('uniform')); learn.get_preds()
    learn.remove_cb(PriorShift)
    learn.add_cb(PriorShift('uniform', source=[.8, .15, .05]))
    p,_ = learn.get_preds()
    assert p.shape == (100, 3)


# --- learn.load puts the loaded weights' prior back ---

def test_load_restores_the_weights_prior(dls, tmp_path):
    learn = tabular_learner(dls, layers=[8], path=tmp_path)
    quiet_fit(learn, 1)
    plain = learn.trained_prior
    learn.save('plain')
    assert prior_file(tmp_path/'models'/'plain.pth').exists()
    quiet_fit(learn, 3, cbs=BalancedFinetune(epochs=1))
    assert torch.allclose(learn.trained_prior.priors, torch.tensor([.5, .5], dtype=torch.float64))
    learn.load('plain')
    assert torch.equal(learn.trained_prior.priors, plain.priors) and learn.trained_prior.how == plain.how
    learn.add_cb(PriorShift('uniform'))
    p,_ = learn.get_preds()
    learn.remove_cb(PriorShift)
    z,_ = learn.get_preds(act=lambda o: o)
    assert torch.allclose(p, prior_shift_logits(z, torch.full((2,), .5, dtype=torch.float64), plain.priors).softmax(1).float(), atol=1e-6)


def test_load_of_weights_without_a_prior_warns(dls, tmp_path):
    learn = tabular_learner(dls.resampled('balanced'), layers=[8], path=tmp_path)
    quiet_fit(learn, 1)
    learn.save('w')
    prior_file(tmp_path/'models'/'w.pth').unlink()
    with pytest.warns(UserWarning, match="loaded without their trained prior .no w.prior.pt beside them"): learn.load('w')
    assert learn.trained_prior is None
    assert torch.allclose(trained_prior(learn).priors, torch.tensor([.5, .5], dtype=torch.float64))  # what the current loader trains under


def test_save_and_load_through_a_file_object(dls, tmp_path):
    "fastai's save/load take an open file (`join_path_file` passes it through): the weights round-trip, no prior file is written, and the load says the prior is unknown"
    import io
    learn = tabular_learner(dls, layers=[8], path=tmp_path)
    quiet_fit(learn, 1)
    buf = io.BytesIO()
    assert learn.save(buf) is buf
    assert not (tmp_path/'models').exists() or not list((tmp_path/'models').iterdir())
    w = {k: v.clone() for k,v in learn.model.state_dict().items()}
    quiet_fit(learn, 2, cbs=BalancedFinetune(epochs=1))
    buf.seek(0)
    with pytest.warns(UserWarning, match="read from a file object"): learn.load(buf)
    assert all(torch.equal(w[k], v) for k,v in learn.model.state_dict().items())
    assert learn.trained_prior is None
    with open(tmp_path/'w.pth', 'wb') as fh: learn.save(fh)  # an open file on disk: still nothing beside it
    assert not prior_file(tmp_path/'w.pth').exists()


def test_a_load_at_the_end_of_the_fit_keeps_its_epochs_prior(dls, tmp_path):
    "Weights saved after the natural epoch and loaded back when the fit ends (as SaveModelCallback does with its best epoch) keep the natural data's prior"
    class SaveFirst(Callback):  # not `Save`: fastai would attach it as `learn.save`
        order = 65
        def after_epoch(self):
            if self.epoch == 0: self.learn.save('first')
        def after_fit(self): self.learn.load('first')
    learn = tabular_learner(dls, layers=[8], path=tmp_path)
    quiet_fit(learn, 2, cbs=[BalancedFinetune(epochs=1), SaveFirst()])
    c = torch.tensor(class_counts(dls).values, dtype=torch.float64)
    assert torch.allclose(learn.trained_prior.priors, c / c.sum())  # epoch 0 trained on the natural data, not the stage's balanced draw
    quiet_fit(learn, 2, cbs=BalancedFinetune(epochs=1))  # no load: the stage's prior
    assert torch.allclose(learn.trained_prior.priors, torch.tensor([.5, .5], dtype=torch.float64))


# --- text: TextDataLoaders + text_classifier_learner (AWD_LSTM, no pretrained weights) ---

def text_frame(n=300, seed=0):
    "A small corpus built here: the rare class uses words the common one seldom does"
    rng = np.random.default_rng(seed)
    words = 'alpha beta gamma delta eps zeta eta theta iota kappa lam mu'.split()
    y = np.where(rng.random(n) < 0.1, 'rare', 'common')
    txt = [' '.join(rng.choice(words[:6] if l == 'common' else words[4:], 10)) for l in y]
    return pd.DataFrame({'text': txt, 'label': y, 'is_valid': np.arange(n) >= n * 4 // 5})


def test_text_classifier_counts_resampling_finetune_and_shift():
    from fastai.text.all import TextDataLoaders, text_classifier_learner, AWD_LSTM, awd_lstm_clas_config
    small = dict(awd_lstm_clas_config, emb_sz=32, n_hid=64, n_layers=2)  # fastai's AWD_LSTM classifier, narrower: the same model and callbacks, a fraction of the cost
    df = text_frame()
    dls = TextDataLoaders.from_df(df, text_col='text', label_col='label', valid_col='is_valid', bs=16, seq_len=16)
    assert class_counts(dls).to_dict() == df.label[~df.is_valid].value_counts().to_dict()
    r = dls.resampled('balanced')
    assert r.vocab == dls.vocab and len(r.vocab) == 2 and list(r.vocab[1]) == ['common', 'rare']  # [words, classes], as fastai's text learners read it
    set_seed(0)
    learn = text_classifier_learner(r, AWD_LSTM, pretrained=False, config=small)
    assert learn.model[0].module.encoder.num_embeddings == len(dls.vocab[0])
    quiet_fit(learn, 1)
    assert torch.allclose(learn.trained_prior.priors, torch.tensor([.5, .5], dtype=torch.float64))
    learn = text_classifier_learner(dls, AWD_LSTM, pretrained=False, config=small)
    with pytest.warns(UserWarning, match=re.escape("BalancedFinetune(cache='auto'): the model's output is not its last linear layer's (the model returns a tuple)")):
        quiet_fit(learn, 2, cbs=BalancedFinetune(epochs=1))  # AWD_LSTM's classifier returns (scores, raw outputs, outputs): the stage runs through the model
    assert torch.allclose(learn.trained_prior.priors, torch.tensor([.5, .5], dtype=torch.float64)) and learn.dls.train is dls.train
    learn.trained_prior = None  # the natural prior, from the loader
    z,_ = learn.get_preds(act=lambda o: o)
    learn.add_cb(PriorShift('uniform'))
    p,_ = learn.get_preds()
    c = torch.tensor(class_counts(dls).values, dtype=torch.float64)
    assert torch.allclose(p, prior_shift_logits(z, torch.full((2,), .5, dtype=torch.float64), c / c.sum()).softmax(1).float(), atol=1e-5)


# --- every report scores the same items, of a classifier that gives probabilities ---

def _ignoring_losses():
    from functools import partial
    from fastai.losses import FocalLossFlat, LabelSmoothingCrossEntropyFlat
    from fastai_imbalance.losses import LogitAdjustedLoss
    F = nn.functional
    return [('FocalLossFlat', lambda d: FocalLossFlat(), -100), ('LabelSmoothingCrossEntropyFlat', lambda d: LabelSmoothingCrossEntropyFlat(), -100),
            ('LogitAdjustedLoss', lambda d: LogitAdjustedLoss(d), -100), ('F.cross_entropy', lambda d: F.cross_entropy, -100),
            ('partial ignore_index=255', lambda d: partial(F.cross_entropy, ignore_index=255), 255),
            ('numpy ignore_index', lambda d: CrossEntropyLossFlat(ignore_index=np.int64(255)), 255)]

@pytest.mark.parametrize('name,make,ignored', _ignoring_losses(), ids=[o[0] for o in _ignoring_losses()])
def test_losses_that_leave_out_minus_100_or_their_ignore_index(name, make, ignored):
    "Losses built on F.cross_entropy leave out -100 without saying so; a partial or a numpy integer says another value: every report leaves those items out"
    from sklearn.metrics import precision_recall_fscore_support
    from fastai_imbalance.interpret import ImbalanceInterpretation
    set_seed(0)
    x = torch.randn(300, 4)
    y = (x[:, 0] > 0.3).long() + (x[:, 1] > 1).long()
    y[200::7] = ignored
    learn = _tensor_learner(x, y, nn.Linear(4, 3), CrossEntropyLossFlat())
    learn.loss_func = make(learn.dls)
    soft = lambda o: o.softmax(1)  # the plain functions carry no activation: the interpretation needs probabilities
    with learn.no_bar(): p,t = learn.get_preds(); r = learn.class_report(); interp = ImbalanceInterpretation.from_learner(learn, act=soft)
    k = t != ignored
    sup = precision_recall_fscore_support(t[k].numpy(), p[k].argmax(1).numpy(), labels=[0, 1, 2], zero_division=0)[3]
    assert r.loc[[0, 1, 2], 'support'].tolist() == sup.tolist() and int(k.sum()) == 85
    assert len(interp.targs) == 85 and interp.per_class().loc[[0, 1, 2], 'support'].tolist() == sup.tolist()


def test_class_codes_outside_the_model_are_refused_by_every_report(capsys):
    "A code the model has no class for (5 of 3 classes, or -100 beside a loss that ignores another value) is refused by each report, naming it"
    from fastai_imbalance.interpret import ImbalanceInterpretation
    set_seed(0)
    x = torch.randn(300, 4)
    y = (x[:, 0] > 0.3).long()
    for bad,loss,msg in ((5, lambda o, t, reduction='mean': nn.functional.cross_entropy(o, t.clamp(0, 2), reduction=reduction), "the targets include 5, outside the model's classes 0 ... 2"),
                         (-100, CrossEntropyLossFlat(ignore_index=7), "the targets include -100, outside the model's classes 0 ... 2 (and not the loss's ignore_index, 7")):
        yb = y.clone(); yb[200::9] = bad
        learn = _tensor_learner(x, yb, nn.Linear(4, 3), loss)
        if bad == 5: calls = [lambda: learn.class_report(), lambda: learn.threshold_for(specificity=0.9, pos=1), lambda: ImbalanceInterpretation.from_learner(learn)]
        else:  # the loss fails on -100 in any pass through the learner (fastai computes the validation loss): PyTorch's IndexError; scores made by hand
            with torch.no_grad(): p,t = learn.model(x[200:]).softmax(1),yb[200:]
            calls = [lambda: ImbalanceInterpretation(learn, learn.dls.valid, torch.zeros(len(t)), preds=p, targs=t)]
        for call in calls:
            with learn.no_bar(), pytest.raises(ValueError, match=re.escape(msg)): call()


def test_scores_that_are_not_probabilities_are_refused_where_probabilities_are_needed():
    "PyTorch's raw losses give fastai no activation: the interpretation and threshold_for refuse logits (naming fastai's loss), class_report's argmax needs none"
    from fastai_imbalance.interpret import ImbalanceInterpretation
    set_seed(0)
    x = torch.randn(300, 4)
    y = (x[:, 0] > 0.3).long() + (x[:, 1] > 1).long()
    learn = _tensor_learner(x, y, nn.Linear(4, 3), nn.CrossEntropyLoss())
    with torch.no_grad(): learn.model.bias.copy_(torch.tensor([3., 0., -1.]))
    with learn.no_bar(): r = learn.class_report()
    assert int(r.support.sum()) == 100
    for call in (lambda: learn.threshold_for(specificity=0.9, pos=1), lambda: ImbalanceInterpretation.from_learner(learn)):
        with learn.no_bar(), pytest.raises(ValueError, match=r"not probabilities: PyTorch's CrossEntropyLoss .* use fastai's loss_func=CrossEntropyLossFlat\(\)"): call()
    nll = _tensor_learner(x, y, nn.Sequential(nn.Linear(4, 3), nn.LogSoftmax(1)), nn.NLLLoss())  # log-probabilities: negative
    with nll.no_bar(), pytest.raises(ValueError, match=r"the scores include -[0-9.]+, not probabilities: PyTorch's NLLLoss"): nll.threshold_for(specificity=0.9, pos=2, apply=True)
    assert not any(type(cb).__name__ == 'OperatingThreshold' for cb in nll.cbs)
    ml = _tensor_learner(x, (x[:, :3] > 0).float(), nn.Linear(4, 3), nn.functional.binary_cross_entropy_with_logits)
    with torch.no_grad(): ml.model.bias.fill_(3.)
    with ml.no_bar(), pytest.raises(ValueError, match=re.escape("use fastai's loss_func=BCEWithLogitsLossFlat()")): ml.class_report()


def test_an_ignore_index_on_a_multilabel_loss_keeps_the_probability_check():
    "A multilabel loss with an ignore_index attribute: its (n, L) targets are not flattened away, so logits are still refused"
    class MaskedBCE(nn.Module):
        ignore_index = -1
        def forward(self, o, y, reduction='mean'):
            l = nn.functional.binary_cross_entropy_with_logits(o, y.clamp(0, 1), reduction='none')
            return l.mean() if reduction == 'mean' else l
    x = torch.randn(300, 4)
    learn = _tensor_learner(x, (x[:, :3] > 0).float(), nn.Linear(4, 3), MaskedBCE())
    with torch.no_grad(): learn.model.bias.fill_(3.)
    with learn.no_bar(), pytest.raises(ValueError, match=re.escape("multilabel scores must be probabilities, but the scores include")): learn.class_report()


def test_print_classification_report_scores_the_items_the_tables_score(capsys):
    from sklearn.metrics import classification_report
    from fastai_imbalance.interpret import ImbalanceInterpretation
    set_seed(0)
    x = torch.randn(300, 4)
    y = (x[:, 0] > 0.3).long() + (x[:, 1] > 1).long()
    y[200::7] = -100
    learn = _tensor_learner(x, y, nn.Linear(4, 3), CrossEntropyLossFlat())
    with learn.no_bar(): interp = ImbalanceInterpretation.from_learner(learn); p,t = learn.get_preds()
    capsys.readouterr()
    interp.print_classification_report()
    k = t != -100
    assert capsys.readouterr().out.strip() == classification_report(t[k].numpy(), p[k].argmax(1).numpy(), labels=[0, 1, 2], target_names=['0', '1', '2'], zero_division=0).strip()
