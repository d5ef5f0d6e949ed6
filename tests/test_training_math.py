"""The numbers behind the training path, checked on the CPU.

Each test compares what the training path computes with a reference computed another way:

* packing: two examples concatenated with restarting position_ids (what TRL's padding-free collator
  builds) against each example run alone. transformers keeps them apart only when it sees the packing,
  i.e. when no cache is built (use_cache=False, which SFTTrainer passes), or given an explicit
  block-diagonal mask; with the model's default use_cache=True the second example attends to the first;
* padded batches: the fallback the script uses without flash-attn, against each example alone;
* flex attention (forward only: it has no backward on the CPU) against eager on the tiny Gemma-2, alone,
  padded and packed;
* the fused LM-head loss that SFTTrainer computes, against plain full-logits cross-entropy (and its
  gradients), with Gemma-2's final-logit softcapping; the trained control-token rows' gradient taken from
  their own columns (row_gradients_only) against TRL's gradient of the whole tied head;
* gradient accumulation: one batch of 4 against 4 accumulated micro-batches of 1, through the real
  script with examples of different numbers of trained tokens;
* the real script end to end on a tiny random Gemma-2 (eager attention, softcapping), on padded and on
  padding-free batches (the same losses and gradient norms), and its refusals (SDPA with Gemma-2, 4-bit
  without CUDA); the attention choice, flex attention's shared-memory limit included.

Models: the real Gemma 3 270M (fixture `small_model`) and a tiny random Gemma2ForCausalLM with the
same tokenizer, built here. Everything is float32.
"""

import json

import pytest
import torch
import torch.nn.functional as F

from conftest import run_script
from multiturn import control_tokens, errors, examples, library_patches, model_setup, template_probes

IGNORE = -100

# Two conversations of different lengths and numbers of trained tokens; the first has two trained replies.
CONV_A = [
    {"role": "user", "content": "Convert 3 miles to kilometres."},
    {"role": "assistant", "content": "In short: about 4.83 km.\n\nOne mile is 1.609 km."},
    {"role": "user", "content": "And 10 miles?"},
    {"role": "assistant", "content": "In short: 16.09 km."},
]
CONV_B = [
    {"role": "user", "content": "Is 91 prime?"},
    {"role": "assistant", "content": "In short: no, 91 = 7 x 13."},
]
# Four for gradient accumulation: their numbers of trained tokens differ a lot.
CONVS_GA = [
    CONV_B,
    [{"role": "user", "content": "Say hi."}, {"role": "assistant", "content": "Hi."}],
    [{"role": "user", "content": "What is 12 squared?"}, {"role": "assistant", "content": "In short: 144."}],
    [{"role": "user", "content": "Name three rivers in Europe."},
     {"role": "assistant", "content": "In short: the Danube, the Rhine and the Loire.\n\nThe Danube flows through "
                                      "ten countries, more than any other river."}],
]


# ----------------------------------------------------------------------------------------------------
# helpers


def prepared_examples(ft, tokenizer, conversations, max_seq_length=256):
    """(input_ids, labels) per example, exactly as the script prepares them."""
    fmt = template_probes.detect_chat_format(tokenizer)
    cfg = dict(ft.CONFIG, MAX_SEQ_LENGTH=max_seq_length, NUM_PROC=1)
    dataset, _ = examples.prepare_dataset(conversations, tokenizer, fmt, cfg, "train")
    return [(list(r["input_ids"]), list(r["labels"])) for r in dataset]


def collate(tokenizer, examples, padding_free):
    from trl.trainer.sft_trainer import DataCollatorForLanguageModeling

    collator = DataCollatorForLanguageModeling(pad_token_id=tokenizer.pad_token_id, padding_free=padding_free)
    return collator([{"input_ids": ids, "labels": labels} for ids, labels in examples])


def trained_nll(model, labels, **inputs):
    """Per-position negative log-likelihood of the next token under the model's own logits (softcapped where the
    model does so), 0 where the label is ignored; and the mask. The LM head projects only the positions whose next
    token is trained: the 262144-word head dominates the cost on the CPU."""
    targets = labels[:, 1:]
    mask = targets != IGNORE
    keep = mask.any(0).nonzero().flatten()
    logits = model(**inputs, logits_to_keep=keep).logits
    logp = torch.log_softmax(logits.float(), dim=-1)
    picked = -logp.gather(-1, targets[:, keep].clamp(min=0).unsqueeze(-1)).squeeze(-1)
    nll = torch.zeros(targets.shape, dtype=picked.dtype)
    nll[:, keep] = picked
    return nll * mask, mask


def document_masks(lengths, sliding_window, dtype):
    """Block-diagonal causal masks (4D, additive) for examples concatenated in one row, one per layer type."""
    seg = torch.repeat_interleave(torch.arange(len(lengths)), torch.tensor(lengths))
    i = torch.arange(len(seg))
    allowed = (seg[:, None] == seg[None, :]) & (i[:, None] >= i[None, :])
    sliding = allowed & (i[None, :] > i[:, None] - sliding_window)

    def additive(m):
        return torch.zeros(m.shape, dtype=dtype).masked_fill(~m, torch.finfo(dtype).min)[None, None]

    return {"full_attention": additive(allowed), "sliding_attention": additive(sliding)}


def set_attention(model, impl):
    model.set_attn_implementation(impl)
    assert model.config._attn_implementation == impl


def grads_of(model):
    return {n: p.grad.detach().clone() for n, p in model.named_parameters() if p.grad is not None}


def assert_grads_close(got, want, rtol, atol_scale):
    assert got.keys() == want.keys() and got
    for name in want:
        scale = want[name].abs().max().item()
        torch.testing.assert_close(got[name], want[name], rtol=rtol, atol=atol_scale * max(scale, 1e-12),
                                   msg=lambda m, n=name: f"{n}: {m}")


# ----------------------------------------------------------------------------------------------------
# models


@pytest.fixture(scope="module")
def gemma3(small_model):
    """The real Gemma 3 270M, eval mode (no dropout). Gradients are checked on its last decoder layer and final
    norm only; the rest, including the 262144 x 640 tied embedding, is frozen, as under LoRA."""
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(small_model, dtype=torch.float32, attn_implementation="eager")
    model.eval()
    last = f"layers.{model.config.num_hidden_layers - 1}."
    for name, p in model.named_parameters():
        p.requires_grad_(last in name or name == "model.norm.weight")
    return model


def tiny_gemma2_config(tokenizer):
    from transformers import Gemma2Config

    # initializer_range 0.5 instead of 0.02: sharp attention and logits large enough that both softcaps act
    return Gemma2Config(
        vocab_size=len(tokenizer), hidden_size=64, intermediate_size=128, num_hidden_layers=4,
        num_attention_heads=4, num_key_value_heads=2, head_dim=16, query_pre_attn_scalar=16,
        sliding_window=8, attn_logit_softcapping=50.0, final_logit_softcapping=30.0,
        hidden_activation="gelu_pytorch_tanh", max_position_embeddings=1024, initializer_range=0.5,
        pad_token_id=tokenizer.pad_token_id, bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id, attn_implementation="eager",
    )


@pytest.fixture(scope="module")
def gemma2_folder(tokenizer, tmp_path_factory):
    """A tiny random Gemma-2 saved with the small model's tokenizer: a model folder the script can load."""
    from transformers import Gemma2ForCausalLM

    torch.manual_seed(0)
    model = Gemma2ForCausalLM(tiny_gemma2_config(tokenizer))
    folder = tmp_path_factory.mktemp("tiny-gemma2")
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def gemma2(gemma2_folder):
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(gemma2_folder, dtype=torch.float32, attn_implementation="eager")
    model.eval()
    assert model.config.layer_types[:2] == ["sliding_attention", "full_attention"]
    return model


@pytest.fixture(scope="module")
def pair(ft, tokenizer):
    """The two prepared examples; the second is shorter and has fewer trained tokens."""
    examples = prepared_examples(ft, tokenizer, [CONV_A, CONV_B])
    assert len(examples) == 2
    assert len(examples[0][0]) > len(examples[1][0]) > 16  # longer than the tiny Gemma-2's sliding window of 8
    return examples


@pytest.fixture(scope="module")
def alone(pair):
    """Per-token NLL of each example run on its own, per (model, attention), computed once."""
    cache = {}

    def get(model, impl):
        key = (model.config.model_type, impl)
        if key not in cache:
            set_attention(model, impl)
            with torch.no_grad():
                cache[key] = [trained_nll(model, torch.tensor([labels]), input_ids=torch.tensor([ids]),
                                          use_cache=False)[0][0] for ids, labels in pair]
        set_attention(model, impl)
        return cache[key]

    return get


CASES = [("gemma3", "eager"), ("gemma3", "sdpa"), ("gemma2", "eager")]  # transformers refuses SDPA for Gemma-2


def assert_rows_match(nll, lengths, refs, tol=1e-4):
    """nll: per-position NLL of the examples concatenated in one row (boundary position excluded)."""
    start = 0
    for n, ref in zip(lengths, refs):
        torch.testing.assert_close(nll[start: start + n - 1], ref, rtol=tol, atol=tol)
        start += n


# ----------------------------------------------------------------------------------------------------
# (a) packing


def test_collator_keeps_our_masking(tokenizer, pair):
    (ids_a, lab_a), (ids_b, lab_b) = pair
    batch = collate(tokenizer, pair, padding_free=True)
    n_a, n = len(ids_a), len(ids_a) + len(ids_b)
    assert batch["input_ids"].tolist() == [ids_a + ids_b]
    assert batch["position_ids"].tolist() == [list(range(n_a)) + list(range(len(ids_b)))]
    assert "attention_mask" not in batch
    assert batch["cu_seq_lens_q"].tolist() == [0, n_a, n]
    labels = batch["labels"][0].tolist()
    assert labels[0] == IGNORE and labels[n_a] == IGNORE  # the first token of each example: nothing predicts it
    assert labels == lab_a + lab_b  # our masks pass through untouched
    trained = [i for i, x in enumerate(labels) if x != IGNORE]
    assert trained == ([i for i, x in enumerate(lab_a) if x != IGNORE]
                       + [n_a + i for i, x in enumerate(lab_b) if x != IGNORE])
    assert 0 < sum(x != IGNORE for x in lab_b) < sum(x != IGNORE for x in lab_a)
    # The collator guards the boundary itself: a first label that is not ignored is masked anyway.
    unmasked = collate(tokenizer, [(ids_a, ids_a), (ids_b, ids_b)], padding_free=True)["labels"][0].tolist()
    assert unmasked[0] == IGNORE and unmasked[n_a] == IGNORE and unmasked[n_a + 1] == ids_b[1]


@pytest.mark.parametrize("name,impl", CASES)
def test_packing_by_position_ids(request, tokenizer, pair, alone, name, impl):
    """Examples concatenated with restarting position_ids, no attention mask. transformers builds a block-diagonal
    mask from the position_ids only when no cache is created: with the model's default use_cache=True the second
    example attends to the first (its loss changes a lot); with use_cache=False, which SFTTrainer.compute_loss
    and TRL's fused LM head pass, the examples stay apart, under eager and SDPA alike."""
    model = request.getfixturevalue(name)
    ref_a, ref_b = alone(model, impl)
    batch = collate(tokenizer, pair, padding_free=True)
    n_a = len(pair[0][0])
    inputs = {"input_ids": batch["input_ids"], "position_ids": batch["position_ids"]}
    with torch.no_grad():
        nll_leaky, mask = trained_nll(model, batch["labels"], **inputs)  # use_cache: the model's default, True
        nll_kept, _ = trained_nll(model, batch["labels"], **inputs, use_cache=False)
    # the first example: causal attention alone keeps it exact either way
    torch.testing.assert_close(nll_leaky[0, : n_a - 1], ref_a, rtol=1e-4, atol=1e-4)
    # the second (positions n_a.. predict tokens n_a+1..): far off when the packing is not seen
    b_mask = mask[0, n_a:]
    diff = (nll_leaky[0, n_a:] - ref_b).abs()[b_mask]
    assert diff.mean() > 0.5, f"second example barely changed ({diff.mean():.2e} nats per token)"
    assert abs(nll_leaky[0, n_a:].sum() - ref_b.sum()) / b_mask.sum() > 0.1
    # ... and exact when it is seen
    assert_rows_match(nll_kept[0], [len(ids) for ids, _ in pair], [ref_a, ref_b])


def assert_packed_matches_alone(model, pair, refs, labels, **inputs):
    """The examples of `pair` concatenated in one row (inputs) against each run alone: the same per-token losses,
    the same per-example losses, and the same gradients of their sum. Returns the per-example losses alone."""
    lengths = [len(ids) for ids, _ in pair]
    n_a = lengths[0]
    model.zero_grad(set_to_none=True)
    try:
        ref_losses = []
        for ids, example_labels in pair:
            nll, mask = trained_nll(model, torch.tensor([example_labels]), input_ids=torch.tensor([ids]),
                                    use_cache=False)
            loss = nll.sum() / mask.sum()
            loss.backward()
            ref_losses.append(loss.detach())
        ref_grads = grads_of(model)
        model.zero_grad(set_to_none=True)
        nll, mask = trained_nll(model, labels, **inputs)
        assert_rows_match(nll[0].detach(), lengths, refs)
        losses = [nll[0, : n_a - 1].sum() / mask[0, : n_a - 1].sum(), nll[0, n_a:].sum() / mask[0, n_a:].sum()]
        sum(losses).backward()
        for got, want in zip(losses, ref_losses):
            torch.testing.assert_close(got.detach(), want, rtol=1e-5, atol=1e-5)
        assert_grads_close(grads_of(model), ref_grads, rtol=1e-4, atol_scale=1e-4)
    finally:
        model.zero_grad(set_to_none=True)
    return ref_losses


@pytest.mark.parametrize("name,impl", CASES)
def test_packed_gradients_equal_alone(request, tokenizer, pair, alone, name, impl):
    """What SFTTrainer trains on a padding-free batch (use_cache=False, no attention mask): per-example losses and
    gradients equal to each example run alone (trainable: Gemma 3's last layer and norm; all of the tiny Gemma-2)."""
    model = request.getfixturevalue(name)
    refs = alone(model, impl)
    batch = collate(tokenizer, pair, padding_free=True)
    assert_packed_matches_alone(model, pair, refs, batch["labels"], input_ids=batch["input_ids"],
                                position_ids=batch["position_ids"], use_cache=False)


BLOCK_CASES = [("gemma3", "sdpa"), ("gemma2", "eager")]


@pytest.mark.parametrize("name,impl", BLOCK_CASES)
def test_block_diagonal_mask_is_exact(request, tokenizer, pair, alone, name, impl):
    """An explicit block-diagonal 4D mask (banded on sliding-window layers) keeps packed examples apart: the same
    per-token and per-example losses as each example alone, and the same gradients."""
    model = request.getfixturevalue(name)
    refs = alone(model, impl)
    batch = collate(tokenizer, pair, padding_free=True)
    lengths = [len(ids) for ids, _ in pair]
    n_a = lengths[0]
    masks = document_masks(lengths, model.config.sliding_window, torch.float32)
    # use_cache=True on purpose: the explicit mask alone keeps the examples apart, whatever the mask builder sees
    inputs = {"input_ids": batch["input_ids"], "position_ids": batch["position_ids"], "use_cache": True}
    ref_losses = assert_packed_matches_alone(model, pair, refs, batch["labels"], **inputs, attention_mask=masks)
    if name == "gemma2":
        # The check can fail on this model: with a plain causal mask instead, the second example's loss differs.
        causal = document_masks([sum(lengths)], model.config.sliding_window, torch.float32)
        with torch.no_grad():
            leaky, mask = trained_nll(model, batch["labels"], **inputs, attention_mask=causal)
        assert abs(leaky[0, n_a:].sum() / mask[0, n_a:].sum() - ref_losses[1]) > 0.1


def test_fused_head_keeps_packed_examples_apart(tokenizer, pair, alone, gemma2):
    """The forward SFTTrainer runs on a padding-free batch: TRL's fused LM head on the collated row (it passes
    use_cache=False). Even eager attention keeps the examples apart: log-probs equal each example alone."""
    from trl.trainer.utils import add_fused_lm_head

    refs = alone(gemma2, "eager")
    batch = collate(tokenizer, pair, padding_free=True)
    add_fused_lm_head(gemma2, outputs=("log_probs",))
    try:
        with torch.no_grad():
            out = gemma2(**batch, use_cache=False, fused_lm_head=True)  # every key, as SFTTrainer passes them
    finally:
        del gemma2.forward  # back to the class's own forward
    assert_rows_match(-out.log_probs[0], [len(ids) for ids, _ in pair], refs)


# ----------------------------------------------------------------------------------------------------
# (b) padded batches: the script's fallback without flash-attn (SDPA for Gemma 3, eager for Gemma-2 on CPU)


@pytest.mark.parametrize("name,impl", [("gemma3", "sdpa"), ("gemma2", "eager")])
def test_padded_batch_is_exact(request, tokenizer, pair, alone, name, impl):
    model = request.getfixturevalue(name)
    refs = alone(model, impl)
    batch = collate(tokenizer, pair, padding_free=False)
    lengths = [len(ids) for ids, _ in pair]
    assert batch["input_ids"].shape == (2, max(lengths))
    assert batch["attention_mask"].sum(1).tolist() == lengths  # right padding, masked out
    assert (batch["labels"][1, lengths[1]:] == IGNORE).all()
    with torch.no_grad():
        nll, mask = trained_nll(model, batch["labels"], input_ids=batch["input_ids"],
                                attention_mask=batch["attention_mask"], use_cache=False)
    for row, (ref, n) in enumerate(zip(refs, lengths)):
        torch.testing.assert_close(nll[row, : n - 1], ref, rtol=1e-4, atol=1e-4)
        torch.testing.assert_close(nll[row].sum() / mask[row].sum(), ref.sum() / mask[row].sum(),
                                   rtol=1e-5, atol=1e-5)
        assert not nll[row, n - 1:].any()  # padding is never trained


def test_flex_attention_is_exact_for_gemma2(tokenizer, pair, alone, gemma2):
    """Flex attention, the script's choice for Gemma-2 on a GPU without flash-attn, computes what eager attention
    computes: attention softcapping (which acts on this sharp tiny model) and the sliding window (8 tokens, the
    examples are longer). Checked forward only, since flex attention has no backward on the CPU, on each example
    alone, on a right-padded batch and on a padding-free row (use_cache=False, as SFTTrainer passes)."""
    eager_refs = alone(gemma2, "eager")
    flex_refs = alone(gemma2, "flex_attention")
    for flex, eager in zip(flex_refs, eager_refs):
        torch.testing.assert_close(flex, eager, rtol=1e-4, atol=1e-4)
    lengths = [len(ids) for ids, _ in pair]
    padded = collate(tokenizer, pair, padding_free=False)
    packed = collate(tokenizer, pair, padding_free=True)
    set_attention(gemma2, "flex_attention")
    try:
        with torch.no_grad():
            nll, _ = trained_nll(gemma2, padded["labels"], input_ids=padded["input_ids"],
                                 attention_mask=padded["attention_mask"], use_cache=False)
            for row, (ref, n) in enumerate(zip(eager_refs, lengths)):
                torch.testing.assert_close(nll[row, : n - 1], ref, rtol=1e-4, atol=1e-4)
            nll, _ = trained_nll(gemma2, packed["labels"], input_ids=packed["input_ids"],
                                 position_ids=packed["position_ids"], use_cache=False)
            assert_rows_match(nll[0], lengths, eager_refs)
    finally:
        set_attention(gemma2, "eager")
    # the comparison can fail: the same model without its attention softcapping gives other losses
    attentions = [layer.self_attn for layer in gemma2.model.layers]
    cap = attentions[0].attn_logit_softcapping
    assert cap
    for attention in attentions:
        attention.attn_logit_softcapping = None
    try:
        with torch.no_grad():
            ids, labels = pair[0]
            uncapped, mask = trained_nll(gemma2, torch.tensor([labels]), input_ids=torch.tensor([ids]),
                                         use_cache=False)
        assert (uncapped[0] - eager_refs[0]).abs()[mask[0, : len(ids) - 1]].max() > 1e-2
    finally:
        for attention in attentions:
            attention.attn_logit_softcapping = cap


# ----------------------------------------------------------------------------------------------------
# (c) the fused LM-head loss


@pytest.mark.parametrize("name,lean", [("gemma3", False), ("gemma2", False), ("gemma3", True), ("gemma2", True)])
def test_fused_loss_equals_full_logits_cross_entropy(ft, request, tokenizer, pair, name, lean, monkeypatch):
    """SFTTrainer's loss (TRL's fused, chunked LM head) against cross-entropy on the model's own full logits,
    which include Gemma-2's final-logit softcapping; values, per-token log-probs and gradients. lean: with the
    script's CPU settings (lean_cpu_lm_head: small tiles, only the trained positions scored), which must change
    nothing but the work done."""
    import trl.kernels.chunked_logprob as kernel
    import trl.trainer.utils as trl_utils
    from trl.trainer.utils import add_fused_lm_head

    scored = []
    if lean:
        for module, names in ((kernel, ["TOKEN_CHUNK_SIZE"]), (trl_utils, ["_CHUNKED_LOGPROB_CHUNK_SIZE", "_use_triton"])):
            for attr in names:
                monkeypatch.setattr(module, attr, getattr(module, attr))  # restored after the test
        library_patches.lean_cpu_lm_head()
        fused = trl_utils._ChunkedLogProbFunction

        class Recording:
            @staticmethod
            def apply(hidden, *args):
                scored.append(hidden.shape[0])
                return fused.apply(hidden, *args)

        monkeypatch.setattr(trl_utils, "_ChunkedLogProbFunction", Recording)

    model = request.getfixturevalue(name)
    set_attention(model, "eager")
    batch = collate(tokenizer, pair, padding_free=False)
    inputs = {k: batch[k] for k in ("input_ids", "attention_mask", "labels")}
    targets = inputs["labels"][:, 1:]

    # Reference. float64 cross-entropy: in float32 a log-sum-exp over 262144 logits of size ~100 is off by ~1e-3,
    # more than the fused kernel, which accumulates in float32 chunk by chunk.
    model.zero_grad(set_to_none=True)
    logits = model(input_ids=inputs["input_ids"], attention_mask=inputs["attention_mask"], use_cache=False).logits
    mask = targets != IGNORE
    per_token = torch.zeros(targets.shape, dtype=torch.float64)
    per_token[mask] = F.cross_entropy(logits[:, :-1][mask].double(), targets[mask], reduction="none")
    ref = per_token.sum() / mask.sum()
    ref.backward()
    ref_grads = grads_of(model)
    model.zero_grad(set_to_none=True)

    add_fused_lm_head(model, outputs=("log_probs", "entropy", "is_top1"))  # as SFTTrainer.__init__ does
    try:
        out = model(**inputs, use_cache=False, fused_lm_head=True)  # as SFTTrainer.compute_loss does
        assert torch.equal(out.label_mask, mask)
        assert scored == ([int(mask.sum())] if lean else [])  # the trained positions alone, where set
        loss = -out.log_probs.sum() / out.label_mask.sum()  # SFTTrainer's reduction without num_items_in_batch
        torch.testing.assert_close(out.loss, loss)
        torch.testing.assert_close(loss.double().detach(), ref.detach(), rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(-out.log_probs.double().detach(), per_token.detach(), rtol=1e-5, atol=2e-5)
        loss.backward()
        assert_grads_close(grads_of(model), ref_grads, rtol=1e-4, atol_scale=1e-4)
    finally:
        del model.forward
        model.zero_grad(set_to_none=True)

    if name == "gemma2":
        # The check can fail on this model: without the final-logit softcapping the loss is clearly different.
        with torch.no_grad():
            hidden = model.model(input_ids=inputs["input_ids"], attention_mask=inputs["attention_mask"],
                                 use_cache=False).last_hidden_state
            raw = model.lm_head(hidden)
        cap = model.config.final_logit_softcapping
        torch.testing.assert_close(logits.detach(), cap * torch.tanh(raw / cap), rtol=1e-4, atol=1e-4)
        uncapped = F.cross_entropy(raw[:, :-1][mask].double(), targets[mask])
        assert abs(uncapped - ref.detach()) > 0.1, "softcapping has no visible effect on this model"


@pytest.mark.parametrize("folder", ["small_model", "gemma2_folder"])
def test_trained_rows_get_their_gradient_without_the_heads(ft, request, tokenizer, pair, folder):
    """row_gradients_only (the trained control-token rows' gradient from their own columns) against TRL's own
    path, which computes the whole tied head's gradient and keeps those rows: the same loss, and the same
    gradient for the rows and for every LoRA matrix. On the real Gemma 3 270M and on the tiny Gemma-2, whose
    final-logit softcapping the rows' logits go through. The row is first set to the row of the batch's most
    frequent trained token: so the weight the loss sees must carry it, and its probability is far from 0 (at the
    base model's 1e-8 the -p term of its gradient would not count)."""
    import trl.trainer.utils as trl_utils
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM
    from trl.trainer.utils import add_fused_lm_head

    end_of_turn = tokenizer.convert_tokens_to_ids("<end_of_turn>")
    base = AutoModelForCausalLM.from_pretrained(request.getfixturevalue(folder), dtype=torch.float32,
                                                attn_implementation="eager")
    base.eval()
    config = LoraConfig(r=4, target_modules=["q_proj", "v_proj"], init_lora_weights=False,
                        trainable_token_indices=[end_of_turn])
    model = get_peft_model(base, config)
    head = library_patches.head_with_trained_rows(model)
    batch = collate(tokenizer, pair, padding_free=False)
    inputs = {k: batch[k] for k in ("input_ids", "attention_mask", "labels")}
    assert (inputs["labels"] == end_of_turn).sum() >= 3  # the row is a target, as well as in the context
    trained = inputs["labels"][(inputs["labels"] != IGNORE) & (inputs["labels"] != end_of_turn)]
    delta = head.token_adapter.trainable_tokens_delta["default"]
    with torch.no_grad():
        delta.copy_(base.get_input_embeddings().weight[trained.mode().values].unsqueeze(0))
    add_fused_lm_head(model.get_base_model(), outputs=("log_probs", "entropy", "is_top1"))

    def loss_and_grads():
        model.zero_grad(set_to_none=True)
        out = model(**inputs, use_cache=False, fused_lm_head=True)
        loss = -out.log_probs.sum() / out.label_mask.sum()
        loss.backward()
        return loss.detach(), grads_of(model)

    want_loss, want = loss_and_grads()
    original = trl_utils._ChunkedLogProbFunction
    with library_patches.row_gradients_only(head):
        assert trl_utils._ChunkedLogProbFunction is not original
        got_loss, got = loss_and_grads()
    assert trl_utils._ChunkedLogProbFunction is original
    rows = next(n for n in want if "trainable_tokens_delta" in n)
    assert want[rows].abs().max() > 0 and len(want) > 1
    torch.testing.assert_close(got_loss, want_loss, rtol=1e-6, atol=1e-6)
    assert_grads_close(got, want, rtol=1e-4, atol_scale=1e-4)


# ----------------------------------------------------------------------------------------------------
# (d) gradient accumulation, through the real script


def test_gradient_accumulation_matches_one_big_batch(ft, tokenizer, gemma2_folder, tmp_path, monkeypatch):
    """One optimizer step of batch 4 and one of 4 accumulated micro-batches of 1 see the same gradient: the loss
    is the sum over every trained token of the step divided by their number, not a mean of micro-batch means.
    The script's own main() builds the SFTTrainer (LoRA, fp32 on CPU, non-reentrant checkpointing, length-grouped
    padded batches); a callback reads the gradients just before the optimizer step."""
    import trl
    from transformers import TrainerCallback

    data = tmp_path / "ga.json"
    data.write_text(json.dumps(CONVS_GA))
    counts = [sum(x != IGNORE for x in labels) for _, labels in prepared_examples(ft, tokenizer, CONVS_GA)]
    assert len(set(counts)) == 4 and max(counts) > 4 * min(counts), counts

    captured = {}

    def grads(model):
        return {n: p.grad.detach().clone() for n, p in model.named_parameters()
                if p.requires_grad and p.grad is not None}

    class Capture(TrainerCallback):
        def on_substep_end(self, args, state, control, model=None, **kwargs):  # after each non-final micro-step
            captured["partial"].append(grads(model))

        def on_pre_optimizer_step(self, args, state, control, model=None, **kwargs):
            captured["grads"] = grads(model)
            captured["weights"] = {n: p.detach().clone() for n, p in model.named_parameters() if p.requires_grad}

    class RecordingSFTTrainer(trl.SFTTrainer):
        def __init__(self, *args, callbacks=None, **kwargs):
            super().__init__(*args, callbacks=[*(callbacks or []), Capture()], **kwargs)
            captured["trainer"] = self

        def training_step(self, model, inputs, num_items_in_batch=None):
            captured["trained"].append(int((inputs["labels"][:, 1:] != IGNORE).sum()))
            return super().training_step(model, inputs, num_items_in_batch)

    monkeypatch.setattr(trl, "SFTTrainer", RecordingSFTTrainer)  # main() imports it from trl when it runs
    common = [f"--model_name={gemma2_folder}", f"--data_path={data}", f"--output_dir={tmp_path / 'out'}",
              "--max_steps=1", "--lora_dropout=0.0", "--warmup_ratio=0.0", "--max_grad_norm=0.0",
              "--lr_scheduler=constant", "--logging_steps=1", "--save_steps=0", "--preview_examples=0",
              "--max_seq_length=256", "--precision=fp32"]  # exactness checks: no bf16 rounding
    runs = {}
    for name, batch_size, accumulation in (("batch4", 4, 1), ("accum4x1", 1, 4)):
        captured.clear()
        captured.update(partial=[], trained=[])
        ft.main([*common, f"--run_name={name}", f"--batch_size={batch_size}",
                 f"--gradient_accumulation_steps={accumulation}"])
        args = captured["trainer"].args
        assert (args.per_device_train_batch_size, args.gradient_accumulation_steps) == (batch_size, accumulation)
        assert args.gradient_checkpointing and not args.bf16 and not args.padding_free
        runs[name] = dict(captured)
    big, accumulated = runs["batch4"], runs["accum4x1"]
    assert big["grads"].keys() == accumulated["grads"].keys() and big["grads"]
    for n in big["weights"]:  # the same starting point: LoRA A initialised from the same seed
        torch.testing.assert_close(accumulated["weights"][n], big["weights"][n], rtol=0, atol=0)
    nonzero = [n for n, g in big["grads"].items() if g.abs().max() > 0]
    # B starts at zero, so of LoRA only B has a gradient; so does the row of <end_of_turn>, which this untrained
    # model never learned (TRAIN_CONTROL_TOKENS), and it must accumulate exactly too
    assert any("trainable_tokens_delta" in n for n in nonzero)
    assert nonzero and all("lora_B" in n or "trainable_tokens_delta" in n for n in nonzero)
    flat_big = torch.cat([big["grads"][n].flatten() for n in nonzero])
    flat_acc = torch.cat([accumulated["grads"][n].flatten() for n in nonzero])
    rel = ((flat_acc - flat_big).norm() / flat_big.norm()).item()
    assert rel < 1e-4, f"the accumulated gradient differs from the big batch's by {rel:.2e} (relative)"

    # The check can fail: a mean of per-micro-batch means weights the examples differently. Each micro-step adds
    # (the token-sum gradient of its example) / (trained tokens of the whole step).
    assert sorted(accumulated["trained"]) == sorted(counts) and big["trained"] == [sum(counts)]
    steps = [*accumulated["partial"], accumulated["grads"]]
    assert len(steps) == 4
    total = sum(counts)
    contributions = [torch.cat([(steps[k][n] - (steps[k - 1][n] if k else 0)).flatten() for n in nonzero])
                     for k in range(4)]
    mean_of_means = sum(c * total / n for c, n in zip(contributions, accumulated["trained"])) / 4
    wrong = ((mean_of_means - flat_big).norm() / flat_big.norm()).item()
    assert wrong > 100 * max(rel, 1e-6), f"a mean of micro-batch means would differ by only {wrong:.2e}"


# ----------------------------------------------------------------------------------------------------
# (e), (f) the real script in a subprocess: training a tiny Gemma-2, and two refusals


@pytest.fixture(scope="module")
def script_runs(gemma2_folder, small_model, tmp_path_factory):
    """Four runs of the script, started together (each spends most of its time importing). "train" and "packed"
    take every example in each of their 2 steps (batch 4 of 4 examples) without LoRA dropout: the same
    computation, once on padded and once on padding-free batches."""
    from concurrent.futures import ThreadPoolExecutor

    tmp = tmp_path_factory.mktemp("script-runs")
    data = tmp / "data.json"
    data.write_text(json.dumps(CONVS_GA))  # 4 examples: 2 steps of batch 2
    common = [f"--data_path={data}", f"--output_dir={tmp / 'out'}", "--preview_examples=0", "--max_seq_length=256",
              "--precision=fp32"]  # exactness checks: no bf16 rounding
    same_steps = ["--max_steps=2", "--batch_size=4", "--gradient_accumulation_steps=1", "--lora_dropout=0.0",
                  "--warmup_ratio=0.0", "--logging_steps=1", "--save_steps=0"]
    runs = {
        "train": [f"--model_name={gemma2_folder}", "--run_name=train", *same_steps],
        "packed": [f"--model_name={gemma2_folder}", "--run_name=packed", "--padding_free=True", *same_steps],
        "sdpa": [f"--model_name={gemma2_folder}", "--run_name=sdpa", "--attn_implementation=sdpa"],
    }
    with ThreadPoolExecutor(len(runs)) as pool:
        futures = {k: pool.submit(run_script, *common, *v, timeout=600) for k, v in runs.items()}
        results = {k: f.result() for k, f in futures.items()}
    return tmp / "out", results


def test_tiny_gemma2_trains_through_the_script(script_runs):
    out_dir, results = script_runs
    result = results["train"]
    log = result.stdout + result.stderr
    assert result.returncode == 0, log[-3000:]
    assert "attention: eager (CPU" in result.stdout  # Gemma-2 on CPU: softcapping rules out SDPA, flex has no backward
    assert "batching: padded batches" in result.stdout
    steps = [json.loads(line) for line in (out_dir / "train" / "metrics.jsonl").read_text().splitlines()]
    losses = [s["loss"] for s in steps if "loss" in s]
    assert len(losses) == 2 and all(0 < x < 100 for x in losses), steps
    run = out_dir / "train"
    assert (run / "adapter_model.safetensors").stat().st_size > 0 and (run / "DONE").exists()
    adapter = json.loads((run / "adapter_config.json").read_text())
    assert adapter["r"] == 16 and adapter["lora_alpha"] == 32


def test_padding_free_run_matches_padded_run(script_runs):
    """PADDING_FREE=True with eager attention: the script concatenates each batch into one row and trains exactly
    what the padded run trains: the same losses and gradient norms, step by step."""
    out_dir, results = script_runs
    result = results["packed"]
    assert result.returncode == 0, (result.stdout + result.stderr)[-3000:]
    assert "batching: padding-free with eager attention" in result.stdout

    def steps(run):
        return [json.loads(line) for line in (out_dir / run / "metrics.jsonl").read_text().splitlines()
                if "loss" in json.loads(line)]

    padded, packed = steps("train"), steps("packed")
    assert len(padded) == len(packed) == 2
    for a, b in zip(padded, packed):
        assert a["loss"] == pytest.approx(b["loss"], rel=1e-4), (padded, packed)
        assert a["grad_norm"] == pytest.approx(b["grad_norm"], rel=1e-3), (padded, packed)
        assert a["num_tokens"] == b["num_tokens"]  # the same real tokens (padding is not counted)
    assert padded[1]["loss"] != padded[0]["loss"]  # the second step saw the first one's update


def test_sdpa_is_refused_for_gemma2(script_runs):
    result = script_runs[1]["sdpa"]
    assert result.returncode != 0
    error = [line for line in result.stderr.splitlines() if line.startswith("ERROR:")]
    assert error and "sdpa" in error[0] and "softcapping" in error[0], result.stderr[-2000:]
    assert "Traceback" not in result.stderr


def test_quantization_problems_are_named(ft, monkeypatch):
    import importlib.util

    assert model_setup.quantization_problem() is None  # bitsandbytes (requirements.txt) has CPU kernels
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "bitsandbytes" else real(name, *a))
    assert "pip install -r requirements.txt" in model_setup.quantization_problem()


def test_choose_attention_never_picks_sdpa_with_softcapping(ft, tokenizer, monkeypatch):
    gemma2_config = tiny_gemma2_config(tokenizer)
    for flash in (False, True):
        monkeypatch.setattr(model_setup, "_flash_attn_ok", lambda flash=flash: flash)
        for cuda in (False, True):
            attn, why = model_setup.choose_attention(gemma2_config, "auto", cuda)
            assert attn != "sdpa" and why
            assert attn == ("flash_attention_2" if cuda and flash else "flex_attention" if cuda else "eager")
    with pytest.raises(errors.UserError, match="softcapping"):
        model_setup.choose_attention(gemma2_config, "sdpa", True)
    for requested in ("eager", "flex_attention", "flash_attention_2"):
        assert model_setup.choose_attention(gemma2_config, requested, True)[0] == requested
    # a model without softcapping may use SDPA
    no_softcap = tiny_gemma2_config(tokenizer)
    no_softcap.attn_logit_softcapping = None
    monkeypatch.setattr(model_setup, "_flash_attn_ok", lambda: False)
    assert model_setup.choose_attention(no_softcap, "auto", False)[0] == "sdpa"


def test_flex_attention_is_not_chosen_where_its_backward_cannot_compile(ft, tokenizer, monkeypatch):
    """Gemma-2's head_dim of 256: flex attention's backward needs more shared memory per block than consumer cards
    have (99 KiB on RTX 3090/4090, A10G, L4); there the script picks eager (exact) and says why."""
    gemma2_9b_heads = tiny_gemma2_config(tokenizer)
    gemma2_9b_heads.head_dim = 256
    monkeypatch.setattr(model_setup, "_flash_attn_ok", lambda: False)
    for kib, expected in ((99, "eager"), (163, "flex_attention"), (227, "flex_attention"), (None, "flex_attention")):
        monkeypatch.setattr(model_setup, "_shared_memory_per_block", lambda kib=kib: kib and kib * 1024)
        attn, why = model_setup.choose_attention(gemma2_9b_heads, "auto", True)
        assert attn == expected, (kib, attn, why)
        if attn == "eager":
            assert "99 KiB" in why and "flash-attn" in why
    # small heads fit everywhere; flash-attn, when installed, comes first; an explicit choice is kept
    monkeypatch.setattr(model_setup, "_shared_memory_per_block", lambda: 99 * 1024)
    assert model_setup.choose_attention(tiny_gemma2_config(tokenizer), "auto", True)[0] == "flex_attention"
    assert model_setup.choose_attention(gemma2_9b_heads, "flex_attention", True)[0] == "flex_attention"
    monkeypatch.setattr(model_setup, "_flash_attn_ok", lambda: True)
    assert model_setup.choose_attention(gemma2_9b_heads, "auto", True)[0] == "flash_attention_2"


@pytest.mark.parametrize("setting,probability,expected", [
    ("auto", None, "WARNING: the base model has not learned the control tokens"),
    (True, 0.5, "WARNING: train_control_tokens=True, but the rows of <end_of_turn>"),
    ("auto", 0.5, None)])
def test_untied_head_trains_no_rows_and_says_why(ft, tokenizer, setting, probability, expected, monkeypatch):
    """A model whose LM head is not tied to its embeddings gets no trained rows. Its WARNING says the model has not
    learned the token where it has not (a random tiny Gemma-2 gives <end_of_turn> about 1/vocabulary), and only
    that the rows cannot be trained where it was asked for them (True) but the model knows the token; "auto" says
    nothing about a token the model knows."""
    from accelerate import PartialState
    from transformers import Gemma2ForCausalLM

    config = tiny_gemma2_config(tokenizer)
    config.tie_word_embeddings = False
    torch.manual_seed(0)
    model = Gemma2ForCausalLM(config).eval()
    assert model.get_output_embeddings().weight.data_ptr() != model.get_input_embeddings().weight.data_ptr()
    fmt = template_probes.detect_chat_format(tokenizer)
    train_set, _ = examples.prepare_dataset([CONV_A, CONV_B], tokenizer, fmt, dict(ft.CONFIG, NUM_PROC=1), "train")
    if probability is not None:
        monkeypatch.setattr(control_tokens, "token_probabilities", lambda model, dataset, ids: {t: probability for t in ids})
    lines = []
    cfg = dict(ft.CONFIG, TRAIN_CONTROL_TOKENS=setting)
    assert control_tokens.control_tokens_to_train(model, tokenizer, train_set, cfg, PartialState(), lines.append) == {}
    assert [line[:len(expected)] for line in lines] == ([expected] if expected else [])
