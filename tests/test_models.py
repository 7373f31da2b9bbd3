"""LoRA targets of a multimodal Gemma 3 (vision tower untouched) and the token_type_ids its training needs."""
import torch
from peft import LoraConfig, get_peft_model
from transformers import Gemma3Config, Gemma3ForConditionalGeneration, Gemma3TextConfig, SiglipVisionConfig

from pipeline.models import lora_target_regex, needs_token_type_ids
from stages.train import with_token_type_ids

PROJECTIONS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]


def tiny_multimodal():
    text = Gemma3TextConfig(vocab_size=401, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                            num_attention_heads=4, num_key_value_heads=1, head_dim=16, sliding_window=64,
                            pad_token_id=0, eos_token_id=1, bos_token_id=2)
    vision = SiglipVisionConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2,
                                image_size=28, patch_size=14)
    return Gemma3ForConditionalGeneration(Gemma3Config(text_config=text, vision_config=vision, mm_tokens_per_image=4,
                                                       image_token_index=400, boi_token_index=399,
                                                       eoi_token_index=398))


def test_lora_reaches_the_language_model_only():
    model = tiny_multimodal()
    assert needs_token_type_ids(model)
    peft = get_peft_model(model, LoraConfig(r=4, target_modules=lora_target_regex(PROJECTIONS)))
    adapted = {name.rsplit(".lora_A", 1)[0] for name, _ in peft.named_modules() if name.endswith("lora_A")}
    assert adapted and all("language_model" in name for name in adapted)
    assert len(adapted) == 2 * len(PROJECTIONS)  # 2 decoder layers x 7 projections; none in the vision tower


def test_collator_adds_zero_token_type_ids():
    collate = with_token_type_ids(lambda examples: {"input_ids": torch.tensor([e["input_ids"] for e in examples])})
    batch = collate([{"input_ids": [2, 5, 6]}, {"input_ids": [2, 7, 8]}])
    assert torch.equal(batch["token_type_ids"], torch.zeros(2, 3, dtype=torch.long))
