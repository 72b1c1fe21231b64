//! A second user of the library: DLRM trained through `train` on a data source of its own.

use dlrm_kernels::data::{BatchSource, MiniBatch, Split};
use dlrm_kernels::model::{Dlrm, DlrmConfig};
use dlrm_kernels::train::Trainer;

struct Clicks; // a row of each of 3 tables and 5 dense features; a click: x0 > 0.5 or row < 20

impl BatchSource for Clicks {
    fn dense_features(&self) -> usize {
        5
    }
    fn table_rows(&self) -> Vec<usize> {
        vec![100; 3]
    }
    fn batches(&self, split: Split) -> usize {
        if split == Split::Train { 1000 } else { 4 }
    }
    fn batch(&self, split: Split, epoch: usize, i: usize) -> dlrm_kernels::Result<MiniBatch> {
        let mut rng = dlrm_kernels::rng::Rng::new((split as u64) << 40 | (epoch * 1000 + i) as u64);
        let rows: Vec<i64> = (0..64).map(|_| rng.below(100) as i64).collect();
        let features = |&r: &i64| [(r * 37 % 100) as f32 / 100.0, 1.0, 0.0, -1.0, 0.5];
        let click = |&r: &i64| (r * 37 % 100 > 50 || r < 20) as u8 as f32;
        Ok(MiniBatch {
            dense: rows.iter().flat_map(features).collect(),
            targets: rows.iter().map(click).collect(),
            offsets: vec![(0..64).collect(); 3],
            indices: vec![rows; 3],
        })
    }
}

#[test]
fn trains_dlrm_on_a_source_of_its_own() {
    let model = Dlrm::new(DlrmConfig::tiny(), 7).unwrap();
    let mut trainer = Trainer::new(model, Clicks, Default::default()).unwrap();
    let evals = trainer.run().unwrap().evals; // AUC 0.21 before training, 1.0 at the end
    assert!(evals[0].eval.auc < 0.9 && evals.iter().any(|e| e.eval.auc > 0.95));
}
