//! Writes a demo figure (lines with a legend, bars with error bars, a note)
//! to `demo.svg` and `demo.png` in the folder given, for looking at:
//! `cargo run -p greentrain-plot --example demo -- /tmp`.

use greentrain_plot::{render, Bar, Bars, Figure, Lines, Panel, Series};

fn main() {
    let dir = std::env::args().nth(1).unwrap_or_else(|| ".".into());
    let series = (0..3)
        .map(|k| Series {
            label: format!("mnist_mlp-fp{}-seed4{k}", [32, 16, 16][k]),
            points: (1..=10)
                .map(|e| {
                    (
                        e as f64 * (1.0 + k as f64 * 0.4),
                        100.0 - 5.0 / e as f64 - k as f64 * 0.1,
                    )
                })
                .collect(),
        })
        .collect();
    let fig = Figure {
        title: "demo: accuracy against energy, and a bench".into(),
        panels: vec![
            Panel::Lines(Lines {
                title: "test accuracy against cumulative energy".into(),
                x_label: "cumulative energy (kJ)".into(),
                y_label: "test accuracy (%)".into(),
                series,
                step: false,
            }),
            Panel::Bars(Bars {
                title: "throughput".into(),
                y_label: "samples/s".into(),
                bars: [
                    ("fp32", 22000.0, 300.0),
                    ("fp16", 10000.0, 150.0),
                    ("bf16", 9800.0, 90.0),
                ]
                .iter()
                .map(|&(l, v, e)| Bar {
                    label: l.into(),
                    value: v,
                    error: Some(e),
                    text: format!("{v} ± {e}"),
                })
                .collect(),
            }),
        ],
        note: Some("energy: estimated (CodeCarbon's TDP table x CPU utilisation)".into()),
    };
    let r = render(&fig).expect("render");
    std::fs::write(format!("{dir}/demo.svg"), r.svg).expect("write svg");
    std::fs::write(format!("{dir}/demo.png"), r.png).expect("write png");
}
