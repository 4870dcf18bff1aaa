//! SKU recommendation cases whose right answers are worked out by hand in each test, with the shipped prices
//! (GP/Next-gen: base 0.152217 + license 0.099966 = 0.252183 $/vCore-h; BC: 0.304435 + 0.375 = 0.679435;
//! storage 0.115 / 0.25 $/GB-month above 32 GB; 730 h/month).
use milink_sqlserver::inventory::{DatabaseFacts, Inventory, Workload};
use milink_sqlserver::sizing::{confidence, recommend, License, PriceList, SizingOptions};

fn inventory(cpus: u32, cpu: Vec<f64>, memory_mb: Vec<f64>, iops: Vec<f64>, log: Vec<f64>, data_mb: f64) -> Inventory {
    Inventory {
        instance: milink_sqlserver::inventory::InstanceFacts { cpu_count: cpus, ..Default::default() },
        databases: vec![DatabaseFacts { name: "ToyStore".into(), data_size_mb: data_mb, log_size_mb: 4096.0, data_files: 1, log_files: 1, ..Default::default() }],
        workload: Workload { cpu_points_expected: 256, cpu_percent: cpu, memory_mb, iops, log_mb_per_second: log, file_sizes_mb: vec![data_mb, 4096.0] },
        ..Inventory::default()
    }
}

/// 19 samples at 20 % and one spike at 90 %: p95 (nearest rank 19 of 20) is 20 %.
fn steady_cpu() -> Vec<f64> {
    let mut samples = vec![20.0; 19];
    samples.push(90.0);
    samples
}

fn close(actual: Option<f64>, expected: f64) {
    let actual = actual.expect("a cost");
    assert!((actual - expected).abs() < 0.006, "expected {expected}, got {actual}");
}

#[test]
fn iops_above_what_gp_files_give_picks_next_gen_with_more_storage() {
    // CPU 20 % × 8 = 1.6 vCores → 4. Memory p95 12 GB ≤ 20.4. Storage 20 + 4 GB → 32 GB reserved.
    // IOPS p95 1,200: GP gives 500 per file (two files ≤ 129 GiB) = 1,000 → no GP size fits.
    // Next-gen: 3 IOPS/GB → reserve ceil(400/32)·32 = 416 GB → 1,248 IOPS (cap 6,400 at 4 vCores).
    //   4 × 0.252183 × 730 = 736.37436; (416 − 32) × 0.115 = 44.16 → 780.53436.
    // BC 4 vCores: 4 × 0.679435 × 730 = 1,983.9502 → dearer.
    let inventory = inventory(8, steady_cpu(), vec![10240.0, 12288.0], vec![800.0, 1200.0], vec![2.0, 3.0], 20480.0);
    let recommendation = recommend(&inventory, &SizingOptions::default(), &PriceList::shipped()).unwrap();
    assert_eq!(recommendation.sku, "Next-gen General Purpose 4 vCores (standard-series)");
    assert_eq!((recommendation.vcores, recommendation.storage_gib), (4, 416));
    close(recommendation.monthly_cost_usd, 780.53);
    assert!(recommendation.reasons.iter().any(|r| r.contains("1.60 vCores")), "{:#?}", recommendation.reasons);
    assert!(recommendation.reasons.iter().any(|r| r.contains("Business Critical") && r.contains("1983.95")), "{:#?}", recommendation.reasons);
    assert!(recommendation.reasons.iter().any(|r| r.contains("ESTIMATES")), "the price provenance is in the reasons");
}

#[test]
fn a_light_workload_gets_the_smallest_general_purpose() {
    // Same, IOPS 900 ≤ 1,000 → GP 4 vCores: 736.37436 + 0 (32 GB is free). Next-gen would need 320 GB → 769.49.
    let inventory = inventory(8, steady_cpu(), vec![10240.0, 12288.0], vec![600.0, 900.0], vec![2.0, 3.0], 20480.0);
    let recommendation = recommend(&inventory, &SizingOptions::default(), &PriceList::shipped()).unwrap();
    assert_eq!(recommendation.sku, "General Purpose 4 vCores (standard-series)");
    close(recommendation.monthly_cost_usd, 736.37);
    assert_eq!(recommendation.memory_gib, 4.0 * 5.1);
    let ahb = recommend(&inventory, &SizingOptions { license: License::AzureHybridBenefit, ..SizingOptions::default() }, &PriceList::shipped()).unwrap();
    close(ahb.monthly_cost_usd, 444.47); // 4 × 0.152217 × 730
}

#[test]
fn cpu_with_a_scaling_factor_rounds_up_to_the_next_size() {
    // p95 70 % of 16 CPUs = 11.2 vCores × 1.25 = 14.0 → 16 vCores. GP 16: 16 × 0.252183 × 730 = 2,945.49744.
    let mut cpu = vec![70.0; 19];
    cpu.push(95.0);
    let inventory = inventory(16, cpu, vec![40960.0], vec![300.0], vec![5.0], 20480.0);
    let options = SizingOptions { scaling_factor: 1.25, ..SizingOptions::default() };
    let recommendation = recommend(&inventory, &options, &PriceList::shipped()).unwrap();
    assert_eq!(recommendation.sku, "General Purpose 16 vCores (standard-series)");
    close(recommendation.monthly_cost_usd, 2945.50);
    assert!(recommendation.reasons.iter().any(|r| r.contains("14.00 vCores")), "{:#?}", recommendation.reasons);
}

#[test]
fn log_throughput_sizes_the_instance() {
    // 50 MiB/s of log: GP gives 4.5 MiB/s per vCore → 12 needed → 16 offered (72 MiB/s). CPU alone would be 4.
    let inventory = inventory(8, steady_cpu(), vec![8192.0], vec![300.0], vec![40.0, 50.0], 20480.0);
    let recommendation = recommend(&inventory, &SizingOptions::default(), &PriceList::shipped()).unwrap();
    assert_eq!(recommendation.sku, "General Purpose 16 vCores (standard-series)");
}

#[test]
fn in_memory_oltp_can_only_go_to_business_critical() {
    // BC 4 vCores, license included: 4 × (0.304435 + 0.375) × 730 = 1,983.9502; with AHB 4 × 0.304435 × 730 = 888.9502.
    let mut inventory = inventory(8, steady_cpu(), vec![8192.0], vec![300.0], vec![1.0], 20480.0);
    inventory.databases[0].memory_optimized_tables = 3;
    let recommendation = recommend(&inventory, &SizingOptions::default(), &PriceList::shipped()).unwrap();
    assert_eq!(recommendation.sku, "Business Critical 4 vCores (standard-series)");
    close(recommendation.monthly_cost_usd, 1983.95);
    let ahb = recommend(&inventory, &SizingOptions { license: License::AzureHybridBenefit, ..SizingOptions::default() }, &PriceList::shipped()).unwrap();
    close(ahb.monthly_cost_usd, 888.95);
}

#[test]
fn nothing_fits_forty_terabytes() {
    let inventory = inventory(8, steady_cpu(), vec![8192.0], vec![300.0], vec![1.0], 40.0 * 1024.0 * 1024.0);
    let reason = recommend(&inventory, &SizingOptions::default(), &PriceList::shipped()).unwrap_err();
    assert!(reason.contains("no standard-series managed instance fits"), "{reason}");
}

#[test]
fn without_cpu_samples_it_sizes_as_on_premises() {
    // No ring-buffer samples: 8 logical CPUs × 1.0 → 8 vCores: 8 × 0.252183 × 730 = 1,472.74872.
    let inventory = inventory(8, vec![], vec![], vec![], vec![], 20480.0);
    let recommendation = recommend(&inventory, &SizingOptions::default(), &PriceList::shipped()).unwrap();
    assert_eq!(recommendation.vcores, 8);
    close(recommendation.monthly_cost_usd, 1472.75);
    assert_eq!(recommendation.confidence, "Low");
}

#[test]
fn confidence_follows_the_share_of_the_window_covered() {
    assert_eq!(confidence(256, 256, 12), "High");
    assert_eq!(confidence(200, 256, 2), "Medium", "two I/O snapshots cap it at Medium");
    assert_eq!(confidence(60, 256, 12), "Medium");
    assert_eq!(confidence(30, 256, 12), "Low");
}
