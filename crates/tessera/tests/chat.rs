//! Chat sessions on SmolLM2-135M-Instruct (fetched into the model cache on first use), on the
//! engine `tessera chat` runs: `generate::load`, i.e. the quantized GGUF model.

use tessera::generate::chat::ChatSession;
use tessera::generate::SamplingParams;
use tessera::infer::Numerics;

fn greedy(max_tokens: usize) -> SamplingParams {
    SamplingParams {
        temperature: 0.0,
        max_tokens,
        ..Default::default()
    }
}

#[test]
fn answers_and_keeps_history() {
    let path = tessera::hub::resolve("smollm2-135m-instruct").unwrap();
    let (model, tok) = tessera::generate::load(&path).unwrap();
    assert_eq!(model.numerics(), Numerics::Ggml, "a GGUF runs quantized");
    let mut chat = ChatSession::new(&model, &tok, None).unwrap();
    let mut streamed = String::new();
    let r = chat
        .send(
            "What is the capital of France? Answer in one word.",
            &greedy(16),
            |p| {
                streamed.push_str(p);
                true
            },
        )
        .unwrap();
    assert!(r.generation.text.contains("Paris"), "{}", r.generation.text);
    assert_eq!(
        streamed, r.generation.text,
        "streamed pieces add up to the answer"
    );
    assert_eq!(chat.len(), 2);
    // Stopping early from the callback ends the answer (and keeps what was said).
    let r = chat
        .send("Tell me a long story.", &greedy(64), |_| false)
        .unwrap();
    assert_eq!(
        r.generation.finish_reason,
        tessera::generate::FinishReason::Cancelled
    );
    assert_eq!(chat.len(), 4);
    chat.reset();
    assert!(chat.is_empty());
}

#[test]
fn oldest_turns_are_dropped_when_the_context_would_overflow() {
    let path = tessera::hub::resolve("smollm2-135m-instruct").unwrap();
    let (mut model, tok) = tessera::generate::load(&path).unwrap();
    model.limit_context(80); // a tiny context to force trimming
    let mut chat = ChatSession::new(&model, &tok, Some("Be brief.".into())).unwrap();
    let mut dropped = 0;
    for q in [
        "Name a colour.",
        "Name a fruit.",
        "Name an animal.",
        "Name a country.",
        "Name a city.",
        "Name a tree.",
    ] {
        let r = chat.send(q, &greedy(12), |_| true).unwrap();
        assert!(r.generation.prompt_tokens + r.generation.ids.len() <= 80);
        dropped += r.dropped_turns;
    }
    assert!(dropped >= 2, "no turn was dropped");
    // A single message longer than the context is an error, not a panic, and leaves no trace.
    let before = chat.len();
    let long = "word ".repeat(200);
    assert!(chat.send(&long, &greedy(4), |_| true).is_err());
    assert_eq!(chat.len(), before);
}
