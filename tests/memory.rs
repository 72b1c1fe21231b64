//! The memory estimate of a configuration and the check the model constructor, the
//! checkpoint loader and the trainer make with it before allocating.

use dlrm_kernels::Error;
use dlrm_kernels::memory::{self, MemoryEstimate, Setting};
use dlrm_kernels::model::{Dlrm, DlrmConfig, Precision};
use dlrm_kernels::optim::{Optimizers, TableOptimizer};

const GIB: u64 = 1 << 30;

#[test]
fn the_estimate_counts_tables_parameters_optimizer_state_and_the_batch() {
    let cfg = DlrmConfig::tiny();
    let e = MemoryEstimate::of(&cfg).unwrap();
    assert_eq!(e.tables, 3 * 100 * 4 * 4);
    assert_eq!(e.table_optimizer, 0);
    let adagrad = DlrmConfig {
        optimizers: Optimizers {
            tables: TableOptimizer::RowwiseAdagrad,
            ..Optimizers::default()
        },
        ..cfg.clone()
    };
    assert_eq!(
        MemoryEstimate::of(&adagrad).unwrap().table_optimizer,
        3 * 100 * 4
    );
    // Every parameter is counted, with room for the transposed copy and the biases.
    let model = Dlrm::new(cfg.clone(), 0).unwrap();
    let params: u64 = model
        .tensor_list()
        .iter()
        .filter(|(name, _)| !name.starts_with("emb_l"))
        .map(|(_, shape)| 4 * shape.iter().product::<usize>() as u64)
        .sum();
    assert!(e.bottom_mlp + e.top_mlp >= 2 * params, "{e:?}");
    // The batch part grows with the batch (same blocking: the batch block is 64 from 64 on).
    let at = |batch: usize, precision: Precision| {
        MemoryEstimate::of(&DlrmConfig {
            batch_size: batch,
            precision,
            ..DlrmConfig::small()
        })
        .unwrap()
    };
    for p in [Precision::F32, Precision::Bf16] {
        let (one, four) = (at(2048, p), at(4 * 2048, p));
        assert_eq!(four.batch, 4 * one.batch);
        assert_eq!((four.tables, four.top_mlp), (one.tables, one.top_mlp));
        assert_eq!(one.per_sample * 2048, one.batch);
    }
    // bf16: tables keep 4 bytes a weight (both halves); MLP weights and activations shrink.
    let (f, b) = (at(2048, Precision::F32), at(2048, Precision::Bf16));
    assert_eq!(f.tables, b.tables);
    assert!(b.top_mlp < f.top_mlp && b.batch < f.batch, "{f:?} {b:?}");
    assert_eq!(
        f.total(),
        f.tables + f.table_optimizer + f.bottom_mlp + f.top_mlp + f.batch
    );
}

fn too_large(cfg: &DlrmConfig, available: u64) -> (Setting, String, String) {
    match memory::check_against(cfg, Some(available), 0) {
        Err(e @ Error::TooLarge { .. }) => {
            let text = e.to_string();
            let Error::TooLarge { setting, value, .. } = e else {
                unreachable!()
            };
            (setting, value, text)
        }
        other => panic!("expected TooLarge, got {other:?}"),
    }
}

#[test]
fn a_model_too_large_names_the_setting_that_makes_it_so() {
    let tiny = DlrmConfig::tiny();
    assert!(memory::check_against(&tiny, Some(GIB), 0).is_ok());
    let (setting, value, text) = too_large(
        &DlrmConfig {
            batch_size: 1_000_000_000_000,
            ..tiny.clone()
        },
        GIB,
    );
    assert_eq!(
        (setting, value.as_str()),
        (Setting::BatchSize, "1000000000000")
    );
    assert!(
        text.starts_with("batch size 1000000000000: the model needs "),
        "{text}"
    );
    assert!(
        text.contains("more than 90% of the 1.00 GiB of memory available"),
        "{text}"
    );
    // It says how many samples would fit, and that many do.
    let fit: usize = text
        .split("at most about ")
        .nth(1)
        .and_then(|rest| rest.split(' ').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("{text}"));
    let fitting = DlrmConfig {
        batch_size: fit,
        ..tiny.clone()
    };
    assert!(memory::check_against(&fitting, Some(GIB), 0).is_ok());

    let (setting, value, _) = too_large(
        &DlrmConfig {
            top_mlp: vec![1_000_000_000, 1],
            ..tiny.clone()
        },
        GIB,
    );
    assert_eq!((setting, value.as_str()), (Setting::TopMlp, "1000000000-1"));
    let (setting, value, _) = too_large(
        &DlrmConfig {
            bottom_mlp: vec![5, 100_000_000, 4],
            ..tiny.clone()
        },
        GIB,
    );
    assert_eq!(
        (setting, value.as_str()),
        (Setting::BottomMlp, "5-100000000-4")
    );
    let (setting, value, text) = too_large(
        &DlrmConfig {
            table_rows: vec![4_294_967_295, 100, 100],
            ..tiny.clone()
        },
        GIB,
    );
    assert_eq!(
        (setting, value.as_str()),
        (Setting::TableRows, "4294967295-100-100")
    );
    assert!(text.contains("embedding tables 64.00 GiB"), "{text}");

    // Bytes the caller keeps beside the model count per sample.
    let cfg = DlrmConfig {
        batch_size: 1000,
        ..tiny
    };
    let alone = memory::check_against(&cfg, Some(GIB), 0).unwrap();
    let with_data = memory::check_against(&cfg, Some(GIB), 1000).unwrap();
    assert_eq!(with_data.batch, alone.batch + 1000 * 1000);
    let available = Some(with_data.total());
    assert!(memory::check_against(&cfg, available, 0).is_ok());
    let err = memory::check_against(&cfg, available, 1000).unwrap_err();
    assert!(
        matches!(
            err,
            Error::TooLarge {
                setting: Setting::BatchSize,
                ..
            }
        ),
        "{err}"
    );
}

#[test]
fn sizes_that_overflow_are_errors_naming_the_setting() {
    let tiny = DlrmConfig::tiny();
    let cases = [
        (
            DlrmConfig {
                batch_size: usize::MAX,
                ..tiny.clone()
            },
            Setting::BatchSize,
        ),
        (
            DlrmConfig {
                table_rows: vec![usize::MAX / 2; 3],
                ..tiny.clone()
            },
            Setting::TableRows,
        ),
        (
            DlrmConfig {
                top_mlp: vec![usize::MAX / 8, 1],
                ..tiny.clone()
            },
            Setting::TopMlp,
        ),
        (
            DlrmConfig {
                bottom_mlp: vec![5, usize::MAX / 8, 4],
                ..tiny.clone()
            },
            Setting::BottomMlp,
        ),
    ];
    for (cfg, want) in cases {
        for err in [
            MemoryEstimate::of(&cfg).unwrap_err(),
            memory::check_against(&cfg, None, 0).unwrap_err(),
        ] {
            assert!(
                matches!(err, Error::TooLarge { setting, .. } if setting == want),
                "{err}"
            );
        }
        let err = Dlrm::new(cfg, 0).unwrap_err();
        assert!(
            matches!(err, Error::TooLarge { .. } | Error::Config(_)),
            "{err}"
        );
    }
    // A configuration that does not validate still gets an estimate (no panic).
    let invalid = DlrmConfig {
        bottom_mlp: vec![],
        top_mlp: vec![],
        batch_size: 0,
        ..DlrmConfig::tiny()
    };
    assert!(MemoryEstimate::of(&invalid).is_ok());
    // Unknown memory: only what no machine can address is refused.
    let huge = DlrmConfig {
        batch_size: 1_000_000_000_000,
        ..DlrmConfig::tiny()
    };
    assert!(memory::check_against(&huge, None, 0).is_ok());
    let absurd = DlrmConfig {
        batch_size: 1 << 55,
        ..DlrmConfig::tiny()
    };
    assert!(memory::check_against(&absurd, None, 0).is_err());
}
