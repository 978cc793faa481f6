//! Training from scratch: data, AdamW, schedules, the trainer loop, checkpoints, evaluation.

pub mod bench;
pub mod checkpoint;
pub mod config;
pub mod data;
pub mod eval;
pub mod optim;
pub mod run;
pub mod schedule;
pub mod trainer;

pub use config::TrainConfig;
pub use data::{Batcher, TokenData};
pub use eval::{evaluate_tokens, LmEval};
pub use optim::AdamW;
pub use run::{Ended, Evaluation, Objective, StepStats};
pub use schedule::Schedule;
pub use trainer::Trainer;
