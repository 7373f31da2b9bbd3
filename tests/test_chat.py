"""Assistant-only labels, token by token, for the Gemma 3 and Gemma 4 chat formats; text chunking."""
import pytest

from pipeline.chat import IGNORE, ChatError, assistant_spans, encode_chat, encode_text, family, fold_system

CHAT = [
    {"role": "system", "content": "Kısa cevap ver."},
    {"role": "user", "content": "Ankara nerede?"},
    {"role": "assistant", "content": "İç Anadolu'da."},
    {"role": "user", "content": "Ya İzmir?"},
    {"role": "assistant", "content": "Ege'de."},
]


def learned_text(tokenizer, ids, labels):
    """The learned tokens, decoded run by run, so each assistant turn comes out as one string."""
    runs, current = [], []
    for token, label in zip(ids, labels):
        if label == IGNORE:
            if current:
                runs.append(tokenizer.decode(current))
                current = []
        else:
            assert label == token
            current.append(token)
    if current:
        runs.append(tokenizer.decode(current))
    return runs


def test_gemma3_labels_cover_answers_and_end_of_turn_only(gemma3_tokenizer):
    tok = gemma3_tokenizer
    assert family(tok) == "gemma3"
    ids, labels = encode_chat(tok, CHAT)
    assert tok.decode(ids) == (
        "<bos><start_of_turn>user\nKısa cevap ver.\n\nAnkara nerede?<end_of_turn>\n"
        "<start_of_turn>model\nİç Anadolu'da.<end_of_turn>\n<start_of_turn>user\nYa İzmir?<end_of_turn>\n"
        "<start_of_turn>model\nEge'de.<end_of_turn>\n")
    assert learned_text(tok, ids, labels) == ["İç Anadolu'da.<end_of_turn>", "Ege'de.<end_of_turn>"]
    # token by token: everything up to and including "model\n" is masked, the newline after the turn too
    end_of_turn = tok.convert_tokens_to_ids("<end_of_turn>")
    learned_positions = [i for i, label in enumerate(labels) if label != IGNORE]
    assert ids[learned_positions[0] - 1] == tok.convert_tokens_to_ids("<0x0A>")
    assert [ids[i] for i in learned_positions].count(end_of_turn) == 2
    assert labels[-1] == IGNORE and ids[-2] == end_of_turn and labels[-2] == end_of_turn


def test_gemma4_has_a_native_system_turn_and_its_own_markers(gemma4_tokenizer):
    tok = gemma4_tokenizer
    assert family(tok) == "gemma4"
    ids, labels = encode_chat(tok, CHAT)
    assert tok.decode(ids).startswith("<bos><|turn>system\nKısa cevap ver.<turn|>\n<|turn>user\nAnkara nerede?")
    assert learned_text(tok, ids, labels) == ["İç Anadolu'da.<turn|>", "Ege'de.<turn|>"]


def test_spans_are_character_exact(gemma3_tokenizer):
    text, spans = assistant_spans(gemma3_tokenizer, CHAT)
    assert [text[a:b] for a, b in spans] == ["İç Anadolu'da.<end_of_turn>", "Ege'de.<end_of_turn>"]


def test_template_refusals_become_chat_errors(gemma3_tokenizer):
    with pytest.raises(ChatError, match="alternate"):
        encode_chat(gemma3_tokenizer, [{"role": "user", "content": "a"}, {"role": "user", "content": "b"},
                                       {"role": "assistant", "content": "c"}])


def test_fold_system_for_templates_without_a_system_role():
    assert fold_system(CHAT)[0] == {"role": "user", "content": "Kısa cevap ver.\n\nAnkara nerede?"}
    assert fold_system(CHAT[1:]) == CHAT[1:]


def test_long_text_is_chunked_not_truncated(gemma3_tokenizer):
    tok = gemma3_tokenizer
    text = "Ankara Türkiye'nin başkentidir. " * 20
    chunks = encode_text(tok, text, max_length=16)
    flat = [t for chunk in chunks for t in chunk]
    assert all(len(chunk) <= 16 for chunk in chunks) and len(chunks) > 3
    assert flat[0] == tok.bos_token_id and flat[-1] == tok.eos_token_id
    assert tok.decode(flat[1:-1]) == text
