//! temp
use vigie_simulator::*;
#[test]
fn peek() {
    let g = NewsGenerator::new(1, DEFAULT_BASE_URL).unwrap();
    for i in [0u64, 1, 2, 3, 50] { println!("{}", serde_json::to_string_pretty(&g.article(i)).unwrap()); }
    println!("{}", g.edited(0, 2).summary);
    let c = CountryDayGenerator::new(1, chrono::NaiveDate::from_ymd_opt(2020,1,3).unwrap(), 4).unwrap();
    for d in c.days(100..103) { for r in d { println!("{}", serde_json::to_string(&r).unwrap()); } }
    let cg = CaseGenerator::new(CaseGenConfig::default()).unwrap();
    for r in cg.rows(0..5) { println!("{}", serde_json::to_string(&r).unwrap()); }
    let t = std::time::Instant::now();
    let n = cg.rows(0..200_000).filter(|r| r.hosp_yn.as_str()=="Yes").count();
    println!("{n} {:?}", t.elapsed());
}
