use btd_protocol::program::ModelPreset;
use btd_trainer::*;
fn main() {
    let args: Vec<String> = std::env::args().collect();
    let steps: u64 = args[1].parse().unwrap();
    let bytes: u64 = args[2].parse().unwrap();
    let lr: f64 = args[3].parse().unwrap();
    let corpus = Corpus::synthetic(5, bytes).unwrap();
    let hold = synth::synthetic_holdout(5, 99, (bytes / 10).max(16384)).unwrap();
    let dev = candle_core::Device::Cpu;
    let mut spec = TrainSpec::preset(ModelPreset::Tiny, 3);
    spec.steps = Some(steps);
    spec.eval_tokens = 2048;
    spec.hyper.lr = lr;
    let val_only =
        Corpus::from_text_bytes(corpus.val().repeat(10), corpus.source().clone()).unwrap();
    for (name, c) in [("honest", &corpus), ("cheat", &val_only)] {
        let t0 = std::time::Instant::now();
        let t = train(&spec, c, &dev, &mut |_| std::ops::ControlFlow::Continue(())).unwrap();
        let m = t.checkpoint.model(&dev).unwrap();
        let (v, _) = eval::val_bpb_of(&m, corpus.val(), 2048, &dev).unwrap();
        let (h, _) = eval::val_bpb_of(&m, &hold, 2048, &dev).unwrap();
        println!(
            "{name}: val {v:.4} holdout {h:.4} gap {:.4} ({:.1}s)",
            h - v,
            t0.elapsed().as_secs_f64()
        );
    }
}
