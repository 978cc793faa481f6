//! Any bytes given as a chat-template messages file (`tessera template --messages F`) give a
//! rendered prompt or an error, never a panic: parsed as `Message::list_from_json` does and
//! rendered through SmolLM2's own chat template (the vendored fixture's copy) and a template
//! that uses the Hugging Face extras (tools, `raise_exception`, `strftime_now`).
#![no_main]

use libfuzzer_sys::fuzz_target;
use std::sync::OnceLock;
use tessera::tokenizer::chat::{ChatTemplate, Message};

fn templates() -> &'static [ChatTemplate] {
    static T: OnceLock<Vec<ChatTemplate>> = OnceLock::new();
    T.get_or_init(|| {
        let fx: serde_json::Value = serde_json::from_str(include_str!(
            "../../../../fixtures/reference/smollm2_tokenizer.json"
        ))
        .unwrap();
        let smol = fx["chat_template"].as_str().unwrap();
        let extras = "{% for m in messages %}{% if m.role not in ['system','user','assistant','tool'] %}\
            {{ raise_exception('bad role ' + m.role) }}{% endif %}<{{ m.role }}>{{ m.content | trim }}\
            {% if m.tool_calls %}{{ m.tool_calls | tojson }}{% endif %}{% endfor %}\
            {% if add_generation_prompt %}<assistant>{{ strftime_now('%Y') }}{% endif %}";
        vec![
            ChatTemplate::new(smol, "<|im_start|>", "<|im_end|>").unwrap(),
            ChatTemplate::new(extras, "<s>", "</s>").unwrap(),
        ]
    })
}

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(messages) = Message::list_from_json(text) else {
        return;
    };
    for t in templates() {
        for gen in [false, true] {
            let _ = t.render(&messages, gen);
        }
    }
});
