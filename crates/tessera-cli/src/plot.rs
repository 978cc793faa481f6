//! Loss curves as PNG, drawn from a run's `metrics.jsonl` (the training engine writes the log;
//! drawing it is the program's business).

use anyhow::{Context, Result};
use plotters::prelude::*;
use std::path::Path;

static FONT: &[u8] = include_bytes!("../assets/DejaVuSans.ttf");

fn register_font() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        // Registering a valid embedded font cannot fail in practice; if it did, text would be missing.
        let _ = plotters::style::register_font("sans-serif", FontStyle::Normal, FONT);
    });
}

/// Draw `loss.png` in `run_dir` from its `metrics.jsonl`: the training loss of every step, and
/// the held-out loss of every evaluation (`val_loss` of language modelling, `eval.dev_loss` of
/// fine-tuning). Written beside its place and renamed in.
pub fn loss_png(run_dir: &Path) -> Result<()> {
    let log = run_dir.join("metrics.jsonl");
    let text =
        std::fs::read_to_string(&log).with_context(|| format!("reading {}", log.display()))?;
    let (mut train, mut val) = (Vec::new(), Vec::new());
    for line in text.lines() {
        let Ok(v) = serde_json::from_str::<serde_json::Value>(line) else {
            continue;
        };
        let Some(step) = v["step"].as_f64() else {
            continue;
        };
        if let Some(l) = v["loss"].as_f64() {
            train.push((step, l));
        }
        if let Some(l) = v["val_loss"].as_f64().or(v["eval"]["dev_loss"].as_f64()) {
            val.push((step, l));
        }
    }
    let path = run_dir.join("loss.png");
    register_font();
    let tmp = tempfile::Builder::new()
        .prefix(".loss-")
        .suffix(".png")
        .tempfile_in(run_dir)?;
    draw(tmp.path(), &train, &val)
        .map_err(|e| anyhow::anyhow!("plotting {}: {e}", path.display()))?;
    tmp.persist(&path)
        .with_context(|| format!("writing {}", path.display()))?;
    Ok(())
}

fn draw(
    path: &Path,
    train: &[(f64, f64)],
    val: &[(f64, f64)],
) -> std::result::Result<(), Box<dyn std::error::Error>> {
    let root = BitMapBackend::new(path, (900, 540)).into_drawing_area();
    root.fill(&WHITE)?;
    let all = train.iter().chain(val.iter());
    let max_x = all.clone().map(|p| p.0).fold(1.0, f64::max);
    let finite = |y: &f64| y.is_finite();
    let max_y = all
        .clone()
        .map(|p| p.1)
        .filter(finite)
        .fold(0.0, f64::max)
        .max(1e-3)
        * 1.05;
    let min_y = all
        .map(|p| p.1)
        .filter(finite)
        .fold(f64::INFINITY, f64::min)
        .min(max_y)
        * 0.95;
    let min_y = if min_y.is_finite() { min_y } else { 0.0 };
    let mut chart = ChartBuilder::on(&root)
        .caption("loss (nats per token)", ("sans-serif", 22))
        .margin(12)
        .x_label_area_size(40)
        .y_label_area_size(56)
        .build_cartesian_2d(0f64..max_x, min_y..max_y)?;
    chart
        .configure_mesh()
        .x_desc("step")
        .y_desc("loss")
        .draw()?;
    chart
        .draw_series(LineSeries::new(train.iter().copied(), &BLUE))?
        .label("train")
        .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], BLUE));
    chart
        .draw_series(LineSeries::new(val.iter().copied(), RED.stroke_width(2)))?
        .label("validation")
        .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], RED));
    chart.draw_series(val.iter().map(|&p| Circle::new(p, 3, RED.filled())))?;
    chart
        .configure_series_labels()
        .background_style(WHITE.mix(0.8))
        .border_style(BLACK)
        .draw()?;
    root.present()?;
    Ok(())
}
