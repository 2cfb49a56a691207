"""Project tests for chapter 5 beyond the hidden checks: bad input gets a clear error, the
bag of features really is blind to binding, and the CLIP swapped-caption test runs on a tiny
random CLIP saved to a temporary directory and loaded through ``load_clip``."""

import json

import pytest
import torch

from solutions import binding


# --------------------------------------------------------------------------- bad input


def test_unknown_colour_or_shape_names_the_choices():
    with pytest.raises(ValueError, match="unknown colour 'teal'.*red"):
        binding.scene_indices([("teal", "cube")])
    with pytest.raises(ValueError, match="unknown shape 'donut'.*sphere"):
        binding.scene_indices([("red", "donut")])
    with pytest.raises(TypeError, match="pair"):
        binding.scene_indices(["red cube"])


def test_role_of_the_wrong_size():
    T = torch.randn(4, 6)
    with pytest.raises(ValueError, match="size d_r = 4"):
        binding.tensor_product_unbind(T, torch.randn(6))
    with pytest.raises(ValueError, match="same number of rows"):
        binding.tensor_product_bind(torch.randn(3, 4), torch.randn(2, 4))


def test_more_objects_than_slots():
    scenes = binding.random_scenes(2, 3, generator=torch.Generator().manual_seed(0))
    with pytest.raises(ValueError, match="only 2 slot maps"):
        binding.matrix_bind(scenes, torch.randn(8, 4), torch.randn(5, 4), torch.randn(2, 4, 4))


def test_too_many_objects_for_the_vocabulary():
    with pytest.raises(ValueError, match="need at least 6"):
        binding.random_scenes(3, 6)


def test_unknown_scheme():
    with pytest.raises(ValueError, match="unknown scheme"):
        binding.retrieval_accuracy("holographic", 64, [1])


# --------------------------------------------------------------------------- the schemes


def test_bag_cannot_tell_swapped_scenes_apart_but_bindings_can():
    g = torch.Generator().manual_seed(0)
    C, S = torch.randn(8, 16, generator=g), torch.randn(5, 16, generator=g)
    scene = binding.scene_indices([("red", "cube"), ("blue", "sphere")])[None]
    swapped = binding.swap_colours(scene)
    assert swapped.tolist() == binding.scene_indices([("blue", "cube"), ("red", "sphere")])[None].tolist()
    assert torch.equal(binding.bag_of_features(scene, C, S), binding.bag_of_features(swapped, C, S))
    for maps in (binding.position_slot_maps(2, 16), binding.rotation_slot_maps(2, 16, g)):
        assert not torch.allclose(binding.matrix_bind(scene, C, S, maps), binding.matrix_bind(swapped, C, S, maps))
    T = binding.tensor_product_bind(S[scene[0, :, 1]], C[scene[0, :, 0]])
    T_swapped = binding.tensor_product_bind(S[swapped[0, :, 1]], C[swapped[0, :, 0]])
    assert not torch.allclose(T, T_swapped)


def test_rotation_maps_are_orthogonal_powers():
    maps = binding.rotation_slot_maps(3, 6, torch.Generator().manual_seed(1))
    assert torch.allclose(maps[0], torch.eye(6))
    assert torch.allclose(maps[1] @ maps[1].T, torch.eye(6), atol=1e-5)
    assert torch.allclose(maps[2], maps[1] @ maps[1], atol=1e-5)


def test_retrieval_is_perfect_for_one_object_in_many_dimensions():
    for scheme in ("bag", "position", "matrix", "tensor"):
        assert binding.retrieval_accuracy(scheme, 256, [1], n_scenes=100, n_slots=2) == [1.0]


def test_render_and_captions():
    g = torch.Generator().manual_seed(0)
    scenes = binding.random_scenes(4, 2, generator=g)
    images = binding.render_scenes(scenes, generator=g)
    assert images.shape == (4, 3, 32, 32) and 0 <= images.min() and images.max() <= 1
    tokens = binding.caption_tokens(scenes, torch.tensor([0, 1, 0, 1]))
    words = [" ".join(binding.WORDS[i] for i in row) for row in tokens.tolist()]
    first = binding.captions(scenes[:1], ("a {0} and a {1}",))[0]
    assert words[0] == first
    assert binding.captions(scenes[1:2], ("a {0} and a {1}",), order=(1, 0))[0] == words[1]


def test_bag_of_words_text_tower_ties_on_every_swap():
    encoder = binding.BagOfWordsTextEncoder()
    g = torch.Generator().manual_seed(0)
    scenes = binding.random_scenes(50, 2, generator=g)
    first = torch.randint(2, (50,), generator=g)
    a = encoder(binding.caption_tokens(scenes, first))
    b = encoder(binding.caption_tokens(binding.swap_colours(scenes), first))
    assert torch.equal(a, b)
    assert binding.swap_test_accuracy(torch.randn(50, 64), a, b) == 0.5


# --------------------------------------------------------------------------- a real CLIP, tiny and random


def _tiny_clip(directory):
    from tokenizers import Tokenizer, models, pre_tokenizers, processors
    from transformers import CLIPConfig, CLIPImageProcessor, CLIPModel, PreTrainedTokenizerFast

    vocab = {w: i for i, w in enumerate(["[PAD]", "[UNK]", "[BOS]", "[EOS]", *binding.WORDS])}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tok.post_processor = processors.TemplateProcessing(
        single="[BOS] $A [EOS]", special_tokens=[("[BOS]", 2), ("[EOS]", 3)])
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="[PAD]", unk_token="[UNK]",
                                        bos_token="[BOS]", eos_token="[EOS]")
    config = CLIPConfig(
        text_config=dict(vocab_size=len(vocab), hidden_size=16, intermediate_size=32, num_hidden_layers=1,
                         num_attention_heads=2, max_position_embeddings=16, bos_token_id=2,
                         eos_token_id=3, pad_token_id=0),
        vision_config=dict(hidden_size=16, intermediate_size=32, num_hidden_layers=1, num_attention_heads=2,
                           image_size=32, patch_size=8),
        projection_dim=8)
    torch.manual_seed(0)
    CLIPModel(config).save_pretrained(directory)
    tokenizer.save_pretrained(directory)
    CLIPImageProcessor(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32}).save_pretrained(directory)
    return directory


def test_swapped_caption_test_runs_on_a_tiny_random_clip(tmp_path):
    model, tokenizer, image_processor = binding.load_clip(_tiny_clip(tmp_path / "clip"))
    accuracy = binding.clip_swap_test(model, tokenizer, image_processor, n_scenes=20, size=32)
    assert 0.0 <= accuracy <= 1.0
    assert accuracy == binding.clip_swap_test(model, tokenizer, image_processor, n_scenes=20, size=32)


def test_load_clip_refuses_a_text_only_model(tmp_path):
    from transformers import BertConfig, BertModel

    BertModel(BertConfig(vocab_size=30, hidden_size=8, num_hidden_layers=1, num_attention_heads=2,
                         intermediate_size=16)).save_pretrained(tmp_path)
    with pytest.raises(ValueError, match="not a CLIP-like dual encoder"):
        binding.load_clip(tmp_path)


def test_load_clip_refuses_a_directory_without_a_config(tmp_path):
    (tmp_path / "weights.json").write_text(json.dumps({}))
    with pytest.raises(FileNotFoundError, match="no config.json"):
        binding.load_clip(tmp_path)


def test_load_clip_needs_the_preprocessors(tmp_path):
    from transformers import CLIPConfig, CLIPModel

    config = CLIPConfig(
        text_config=dict(vocab_size=20, hidden_size=8, intermediate_size=16, num_hidden_layers=1,
                         num_attention_heads=2, max_position_embeddings=8),
        vision_config=dict(hidden_size=8, intermediate_size=16, num_hidden_layers=1, num_attention_heads=2,
                           image_size=16, patch_size=8),
        projection_dim=4)
    CLIPModel(config).save_pretrained(tmp_path)
    with pytest.raises(ValueError, match="tokenizer or image processor"):
        binding.load_clip(tmp_path)


def test_swapped_caption_test_runs_on_a_tiny_random_siglip(tmp_path):
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast, SiglipConfig, SiglipImageProcessor, SiglipModel

    vocab = {w: i for i, w in enumerate(["[PAD]", "[UNK]", "[EOS]", *binding.WORDS])}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    config = SiglipConfig(
        text_config=dict(vocab_size=len(vocab), hidden_size=16, intermediate_size=32, num_hidden_layers=1,
                         num_attention_heads=2, max_position_embeddings=12, pad_token_id=0, eos_token_id=2),
        vision_config=dict(hidden_size=16, intermediate_size=32, num_hidden_layers=1, num_attention_heads=2,
                           image_size=32, patch_size=8))
    torch.manual_seed(0)
    SiglipModel(config).save_pretrained(tmp_path)
    PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="[PAD]", unk_token="[UNK]", eos_token="[EOS]",
                            model_max_length=12).save_pretrained(tmp_path)
    SiglipImageProcessor(size={"height": 32, "width": 32}).save_pretrained(tmp_path)
    model, tokenizer, image_processor = binding.load_clip(tmp_path)
    accuracy = binding.clip_swap_test(model, tokenizer, image_processor, n_scenes=20, size=32)
    assert 0.0 <= accuracy <= 1.0


# --------------------------------------------------------------------------- training many models at once


def _sae_setup(d_in=6, n_atoms=8):
    g = torch.Generator().manual_seed(0)
    atoms = torch.nn.functional.normalize(torch.randn(n_atoms, d_in, generator=g), dim=-1)
    R = torch.linalg.qr(torch.randn(d_in, d_in, generator=g))[0]
    return atoms, R


def test_saes_trained_together_match_one_trained_alone():
    atoms, R = _sae_setup()
    make = [lambda s=s: binding.MatrixBindingSAE(6, 8, generator=torch.Generator().manual_seed(s)) for s in (1, 2)]
    together = [m() for m in make]
    losses = binding.train_saes(together, atoms, R, p_active=0.2, steps=20)
    alone = make[1]()
    alone_losses = binding.train_saes([alone], atoms, R, p_active=0.2, steps=20)
    assert losses.shape == (20, 2) and alone_losses.shape == (20, 1)
    torch.testing.assert_close(losses[:, 1], alone_losses[:, 0], rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(together[1].R, alone.R, rtol=1e-4, atol=1e-5)
    assert not torch.allclose(together[0].R, together[1].R)  # each SAE keeps its own parameters


def test_start_at_truth_puts_the_true_dictionary_in_both_saes():
    atoms, R = _sae_setup()
    truth = torch.nn.functional.normalize(torch.cat([atoms, atoms @ R]), dim=-1)
    for sae in (binding.MatrixBindingSAE(6, 8), binding.PlainSAE(6, 16)):
        binding.start_at_truth(sae, atoms, R)
        torch.testing.assert_close(sae.dictionary(), truth)
        scores = binding.sae_scores(sae, binding.matrix_binding_data(64, atoms, R, 0.2)[0], atoms, R, 0.3)
        assert scores["pairs"] == 1.0 and scores["mmcs"] > 0.999
    assert scores.keys() == {"loss", "mmcs", "pairs"}  # the plain SAE has no R to score
    assert binding.matrix_cosine(R, 3 * R) == pytest.approx(1.0)


def test_mini_clips_trained_together_match_one_trained_alone():
    kwargs = dict(steps=3, batch_size=16, n_train=64, eval_every=3)
    models, curves, losses = binding.train_mini_clips(binding.OrderAwareTextEncoder, [0, 1], [True, False], **kwargs)
    alone, _, alone_losses = binding.train_mini_clips(binding.OrderAwareTextEncoder, [1], [False], **kwargs)
    assert curves.shape == (1, 2) and losses.shape == (3, 2)
    torch.testing.assert_close(losses[:, 1], alone_losses[:, 0], rtol=1e-4, atol=1e-5)
    for name, value in alone[0].state_dict().items():
        torch.testing.assert_close(models[1].state_dict()[name], value, rtol=1e-4, atol=1e-5)


def test_a_trained_bag_of_words_clip_still_ties_on_every_swap():
    models, curves, _ = binding.train_mini_clips(binding.BagOfWordsTextEncoder, [0], [True], steps=2,
                                                 batch_size=16, n_train=64, eval_every=1)
    assert curves.flatten().tolist() == [0.5, 0.5]
    assert binding.mini_clip_accuracy(models[0], n_scenes=50)["swapped"] == 0.5


# --------------------------------------------------------------------------- the matched control


def test_positional_bag_ties_exactly_on_the_matched_test_only():
    from transformers import AutoTokenizer, BertConfig, BertModel

    from utils.artifacts import minilm_path

    tokenizer = AutoTokenizer.from_pretrained(minilm_path())
    torch.manual_seed(0)
    model = BertModel(BertConfig(vocab_size=tokenizer.vocab_size, hidden_size=16, num_hidden_layers=1,
                                 num_attention_heads=2, intermediate_size=32)).eval()
    scenes = binding.random_scenes(30, 2, generator=torch.Generator().manual_seed(0))
    template = binding.TEMPLATES[1:] + binding.TEMPLATES[:1]

    def pooled_pair(scenes_):
        (first, mask), (second, _) = (binding.positional_bag(binding.captions(scenes_, template, order), model, tokenizer)
                                      for order in ((0, 1), (1, 0)))
        return binding.mean_pool((first + second) / 2, mask)

    def pooled(scenes_, order=(0, 1)):
        return binding.mean_pool(*binding.positional_bag(binding.captions(scenes_, order=order), model, tokenizer))

    true, swapped = pooled_pair(scenes), pooled_pair(binding.swap_colours(scenes))
    assert torch.equal(true, swapped)
    assert binding.swap_test_accuracy(pooled(scenes), true, swapped) == 0.5
    # unmatched, word order alone favours the swapped caption, which keeps more words in place
    assert binding.swap_test_accuracy(pooled(scenes), pooled(scenes, (1, 0)), pooled(binding.swap_colours(scenes))) < 0.5


def test_cosine_effects_recover_known_effects():
    base, effects = 0.5, {"binding": 0.01, "colour order": 0.05, "shape order": 0.03}

    def with_cosine(c):  # unit vectors at cosine c with the anchor e₁
        return torch.tensor([[c, (1 - c * c) ** 0.5]], dtype=torch.float64)

    b, c, s = effects.values()
    found = binding.cosine_effects(torch.tensor([[1.0, 0.0]], dtype=torch.float64), with_cosine(base + b + c + s),
                                   with_cosine(base + b), with_cosine(base + s), with_cosine(base + c))
    assert found == pytest.approx(effects)


# --------------------------------------------------------------------------- a GPU, when there is one


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a GPU")
def test_training_on_a_gpu_sees_the_same_data_as_on_the_cpu():
    atoms, R = _sae_setup()
    on = {}
    for name in ("cpu", "cuda"):
        saes = [binding.MatrixBindingSAE(6, 8, generator=torch.Generator().manual_seed(1)).to(name)]
        on[name] = binding.train_saes(saes, atoms.to(name), R.to(name), p_active=0.2, steps=5)
    torch.testing.assert_close(on["cpu"], on["cuda"], rtol=1e-3, atol=1e-4)
    clips = {name: binding.train_mini_clips(binding.OrderAwareTextEncoder, [0], [True], steps=3, batch_size=16,
                                            n_train=64, eval_every=3, device=name)[2] for name in ("cpu", "cuda")}
    torch.testing.assert_close(clips["cpu"], clips["cuda"], rtol=1e-3, atol=1e-3)
    ridge = binding.ridge_probe(torch.randn(20, 4).cuda(), torch.randint(3, (20,)).cuda(), torch.randn(5, 4).cuda(), 3)
    assert ridge.device.type == "cuda"
