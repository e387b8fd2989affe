//! Renders real figures and checks the bytes: a PNG of the stated size with
//! more than one colour in it, and an SVG that carries every label.

use greentrain_plot::{render, Bar, Bars, Figure, Lines, Panel, Scatter, Series};

fn figure() -> Figure {
    Figure {
        title: "Accuracy against energy".into(),
        panels: vec![
            Panel::Lines(Lines {
                title: "test accuracy".into(),
                x_label: "cumulative energy (kJ)".into(),
                y_label: "test accuracy (%)".into(),
                series: vec![
                    Series {
                        label: "fp32".into(),
                        points: vec![(1.0, 95.0), (2.0, 97.0), (3.0, 98.0)],
                    },
                    Series {
                        label: "fp16".into(),
                        points: vec![(0.5, 94.0), (1.0, 96.5), (1.5, 98.1)],
                    },
                ],
                step: false,
            }),
            Panel::Bars(Bars {
                title: "throughput".into(),
                y_label: "samples/s".into(),
                bars: vec![
                    Bar {
                        label: "fp32".into(),
                        value: 22000.0,
                        error: Some(300.0),
                        text: "22000 ± 300".into(),
                    },
                    Bar {
                        label: "bf16".into(),
                        value: 10000.0,
                        error: None,
                        text: "10000".into(),
                    },
                ],
            }),
        ],
        note: Some("energy: estimated (CodeCarbon TDP table x utilisation)".into()),
    }
}

#[test]
fn a_figure_renders_to_a_png_and_an_svg_with_its_labels() {
    let fig = figure();
    let r = render(&fig).unwrap();
    assert_eq!(&r.png[..8], b"\x89PNG\r\n\x1a\n");
    let dec = png::Decoder::new(std::io::Cursor::new(&r.png));
    let mut reader = dec.read_info().unwrap();
    let info = reader.info();
    assert_eq!((info.width, info.height), r.size);
    let mut buf = vec![0; reader.output_buffer_size()];
    reader.next_frame(&mut buf).unwrap();
    let non_white = buf.chunks(3).filter(|p| p != &[255, 255, 255]).count();
    assert!(non_white > 5_000, "only {non_white} non-white pixels");
    for label in [
        "Accuracy against energy",
        "cumulative energy (kJ)",
        "test accuracy (%)",
        "samples/s",
        "fp32",
        "fp16",
        "22000 ± 300",
        "energy: estimated",
    ] {
        assert!(r.svg.contains(label), "SVG lacks {label:?}");
    }
}

#[test]
fn empty_panels_render_instead_of_failing() {
    let fig = Figure {
        title: "nothing yet".into(),
        panels: vec![
            Panel::Lines(Lines {
                title: "no points".into(),
                x_label: "x".into(),
                y_label: "y".into(),
                series: vec![],
                step: true,
            }),
            Panel::Bars(Bars {
                title: "no bars".into(),
                y_label: "y".into(),
                bars: vec![],
            }),
        ],
        note: None,
    };
    let r = render(&fig).unwrap();
    assert!(r.svg.contains("nothing yet"));
}

#[test]
fn a_scatter_rings_its_marked_points_and_names_both_sets() {
    let scatter = |marked: Vec<(f64, f64)>| Figure {
        title: "Pareto".into(),
        panels: vec![Panel::Scatter(Scatter {
            title: "accuracy against energy".into(),
            x_label: "energy (J)".into(),
            y_label: "test accuracy (%)".into(),
            points: Series {
                label: "trials".into(),
                points: vec![(1.0, 90.0), (2.0, 95.0), (3.0, 93.0)],
            },
            marked: Series {
                label: "Pareto front".into(),
                points: marked,
            },
        })],
        note: None,
    };
    let with = render(&scatter(vec![(1.0, 90.0), (2.0, 95.0)])).unwrap();
    let without = render(&scatter(vec![])).unwrap();
    for label in ["trials", "Pareto front", "energy (J)", "test accuracy (%)"] {
        assert!(with.svg.contains(label), "SVG lacks {label:?}");
    }
    // The front adds a line and two rings: more drawing than the dots alone.
    assert!(with.svg.matches("<circle").count() >= without.svg.matches("<circle").count() + 2);
    assert!(with.svg.contains("<polyline"), "the front is joined");
}
