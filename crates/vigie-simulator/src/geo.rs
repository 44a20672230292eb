//! The geography of the simulated CDC case data: every state, DC and Puerto
//! Rico with its FIPS code and approximate 2020 population, and a few of its
//! most populous counties.
//!
//! Populations are in thousands and only need to be roughly right: they
//! weight how often a state or county appears. Editing this table changes
//! the generated data.

/// One county: upper-case name as the CDC data set writes it, 5-digit FIPS
/// code, population in thousands.
pub(crate) struct County {
    pub(crate) name: &'static str,
    pub(crate) fips: &'static str,
    pub(crate) population_k: u32,
}

/// One state or territory.
pub(crate) struct UsState {
    /// USPS abbreviation.
    pub(crate) code: &'static str,
    /// 2-digit FIPS code.
    pub(crate) fips: &'static str,
    /// Population in thousands.
    pub(crate) population_k: u32,
    /// A few representative counties; their FIPS codes start with the
    /// state's.
    pub(crate) counties: &'static [County],
}

macro_rules! states {
    ($( $code:literal $fips:literal $pop:literal [ $( $county:literal $cfips:literal $cpop:literal ),+ $(,)? ] )+) => {
        &[ $( UsState {
            code: $code,
            fips: $fips,
            population_k: $pop,
            counties: &[ $( County { name: $county, fips: $cfips, population_k: $cpop } ),+ ],
        } ),+ ]
    };
}

pub(crate) const US_STATES: &[UsState] = states! {
    "AL" "01" 5024 ["JEFFERSON" "01073" 675, "MOBILE" "01097" 415, "MADISON" "01089" 389, "MONTGOMERY" "01101" 229]
    "AK" "02" 733 ["ANCHORAGE" "02020" 291, "MATANUSKA-SUSITNA" "02170" 107, "FAIRBANKS NORTH STAR" "02090" 96]
    "AZ" "04" 7152 ["MARICOPA" "04013" 4420, "PIMA" "04019" 1043, "PINAL" "04021" 425]
    "AR" "05" 3012 ["PULASKI" "05119" 399, "BENTON" "05007" 284, "WASHINGTON" "05143" 245]
    "CA" "06" 39538 [
        "LOS ANGELES" "06037" 10014, "SAN DIEGO" "06073" 3298, "ORANGE" "06059" 3186,
        "RIVERSIDE" "06065" 2418, "SAN BERNARDINO" "06071" 2181, "SANTA CLARA" "06085" 1936,
        "ALAMEDA" "06001" 1682, "SACRAMENTO" "06067" 1585,
    ]
    "CO" "08" 5774 ["DENVER" "08031" 715, "EL PASO" "08041" 730, "ARAPAHOE" "08005" 655, "JEFFERSON" "08059" 582]
    "CT" "09" 3606 ["FAIRFIELD" "09001" 957, "HARTFORD" "09003" 899, "NEW HAVEN" "09009" 864]
    "DE" "10" 990 ["NEW CASTLE" "10003" 570, "SUSSEX" "10005" 237, "KENT" "10001" 182]
    "DC" "11" 690 ["DISTRICT OF COLUMBIA" "11001" 690]
    "FL" "12" 21538 [
        "MIAMI-DADE" "12086" 2702, "BROWARD" "12011" 1944, "PALM BEACH" "12099" 1492,
        "HILLSBOROUGH" "12057" 1459, "ORANGE" "12095" 1429, "DUVAL" "12031" 995,
        "PINELLAS" "12103" 959,
    ]
    "GA" "13" 10712 ["FULTON" "13121" 1066, "GWINNETT" "13135" 957, "COBB" "13067" 766, "DEKALB" "13089" 764]
    "HI" "15" 1455 ["HONOLULU" "15003" 1016, "HAWAII" "15001" 201, "MAUI" "15009" 164]
    "ID" "16" 1839 ["ADA" "16001" 494, "CANYON" "16027" 231, "KOOTENAI" "16055" 171]
    "IL" "17" 12813 ["COOK" "17031" 5275, "DUPAGE" "17043" 932, "LAKE" "17097" 714, "WILL" "17197" 696]
    "IN" "18" 6786 ["MARION" "18097" 977, "LAKE" "18089" 499, "ALLEN" "18003" 385, "HAMILTON" "18057" 347]
    "IA" "19" 3190 ["POLK" "19153" 492, "LINN" "19113" 230, "SCOTT" "19163" 174]
    "KS" "20" 2938 ["JOHNSON" "20091" 609, "SEDGWICK" "20173" 523, "SHAWNEE" "20177" 178, "WYANDOTTE" "20209" 169]
    "KY" "21" 4506 ["JEFFERSON" "21111" 783, "FAYETTE" "21067" 322, "KENTON" "21117" 169]
    "LA" "22" 4658 ["EAST BATON ROUGE" "22033" 456, "JEFFERSON" "22051" 441, "ORLEANS" "22071" 384, "CADDO" "22017" 237]
    "ME" "23" 1362 ["CUMBERLAND" "23005" 303, "YORK" "23031" 212, "PENOBSCOT" "23019" 152]
    "MD" "24" 6177 ["MONTGOMERY" "24031" 1062, "PRINCE GEORGE'S" "24033" 967, "BALTIMORE" "24005" 854, "BALTIMORE CITY" "24510" 586]
    "MA" "25" 7030 ["MIDDLESEX" "25017" 1632, "WORCESTER" "25027" 862, "ESSEX" "25009" 809, "SUFFOLK" "25025" 797]
    "MI" "26" 10077 ["WAYNE" "26163" 1793, "OAKLAND" "26125" 1274, "MACOMB" "26099" 881, "KENT" "26081" 657]
    "MN" "27" 5706 ["HENNEPIN" "27053" 1281, "RAMSEY" "27123" 552, "DAKOTA" "27037" 439]
    "MS" "28" 2961 ["HINDS" "28049" 227, "HARRISON" "28047" 208, "DESOTO" "28033" 185]
    "MO" "29" 6154 ["ST. LOUIS" "29189" 1004, "JACKSON" "29095" 717, "ST. CHARLES" "29183" 405, "ST. LOUIS CITY" "29510" 301]
    "MT" "30" 1084 ["YELLOWSTONE" "30111" 164, "GALLATIN" "30031" 118, "MISSOULA" "30063" 117]
    "NE" "31" 1962 ["DOUGLAS" "31055" 584, "LANCASTER" "31109" 322, "SARPY" "31153" 190]
    "NV" "32" 3105 ["CLARK" "32003" 2266, "WASHOE" "32031" 486]
    "NH" "33" 1378 ["HILLSBOROUGH" "33011" 422, "ROCKINGHAM" "33015" 314, "MERRIMACK" "33013" 153]
    "NJ" "34" 9289 ["BERGEN" "34003" 955, "MIDDLESEX" "34023" 863, "ESSEX" "34013" 863, "HUDSON" "34017" 724]
    "NM" "35" 2118 ["BERNALILLO" "35001" 676, "DONA ANA" "35013" 219, "SANTA FE" "35049" 154]
    "NY" "36" 20201 [
        "KINGS" "36047" 2736, "QUEENS" "36081" 2405, "NEW YORK" "36061" 1694,
        "SUFFOLK" "36103" 1526, "BRONX" "36005" 1472, "NASSAU" "36059" 1396,
        "WESTCHESTER" "36119" 1004, "ERIE" "36029" 954,
    ]
    "NC" "37" 10439 ["WAKE" "37183" 1129, "MECKLENBURG" "37119" 1115, "GUILFORD" "37081" 541, "FORSYTH" "37067" 383]
    "ND" "38" 779 ["CASS" "38017" 184, "BURLEIGH" "38015" 98, "GRAND FORKS" "38035" 73]
    "OH" "39" 11799 ["FRANKLIN" "39049" 1323, "CUYAHOGA" "39035" 1265, "HAMILTON" "39061" 830, "SUMMIT" "39153" 540]
    "OK" "40" 3959 ["OKLAHOMA" "40109" 797, "TULSA" "40143" 669, "CLEVELAND" "40027" 295]
    "OR" "41" 4237 ["MULTNOMAH" "41051" 815, "WASHINGTON" "41067" 600, "CLACKAMAS" "41005" 421, "LANE" "41039" 383]
    "PA" "42" 13003 ["PHILADELPHIA" "42101" 1603, "ALLEGHENY" "42003" 1250, "MONTGOMERY" "42091" 856, "BUCKS" "42017" 646]
    "RI" "44" 1097 ["PROVIDENCE" "44007" 660, "KENT" "44003" 170, "WASHINGTON" "44009" 129]
    "SC" "45" 5118 ["GREENVILLE" "45045" 525, "RICHLAND" "45079" 416, "CHARLESTON" "45019" 408]
    "SD" "46" 887 ["MINNEHAHA" "46099" 197, "PENNINGTON" "46103" 110, "LINCOLN" "46083" 65]
    "TN" "47" 6910 ["SHELBY" "47157" 929, "DAVIDSON" "47037" 715, "KNOX" "47093" 478, "HAMILTON" "47065" 366]
    "TX" "48" 29146 [
        "HARRIS" "48201" 4731, "DALLAS" "48113" 2613, "TARRANT" "48439" 2110,
        "BEXAR" "48029" 2009, "TRAVIS" "48453" 1290, "COLLIN" "48085" 1064,
        "HIDALGO" "48215" 870, "EL PASO" "48141" 865,
    ]
    "UT" "49" 3272 ["SALT LAKE" "49035" 1186, "UTAH" "49049" 659, "DAVIS" "49011" 363]
    "VT" "50" 643 ["CHITTENDEN" "50007" 169, "RUTLAND" "50021" 61, "WASHINGTON" "50023" 60]
    "VA" "51" 8631 ["FAIRFAX" "51059" 1150, "PRINCE WILLIAM" "51153" 482, "VIRGINIA BEACH CITY" "51810" 459, "LOUDOUN" "51107" 421]
    "WA" "53" 7705 ["KING" "53033" 2269, "PIERCE" "53053" 922, "SNOHOMISH" "53061" 828, "SPOKANE" "53063" 540]
    "WV" "54" 1794 ["KANAWHA" "54039" 181, "BERKELEY" "54003" 122, "MONONGALIA" "54061" 105]
    "WI" "55" 5894 ["MILWAUKEE" "55079" 939, "DANE" "55025" 562, "WAUKESHA" "55133" 407]
    "WY" "56" 577 ["LARAMIE" "56021" 100, "NATRONA" "56025" 80, "CAMPBELL" "56005" 47]
    "PR" "72" 3286 ["SAN JUAN" "72127" 342, "BAYAMON" "72021" 185, "CAROLINA" "72031" 155]
};

#[cfg(test)]
mod tests {
    use std::collections::HashSet;

    use super::*;

    #[test]
    fn table_is_consistent() {
        assert_eq!(US_STATES.len(), 52, "50 states, DC and PR");
        let mut codes = HashSet::new();
        let mut county_fips = HashSet::new();
        for state in US_STATES {
            assert!(codes.insert(state.code), "{} twice", state.code);
            assert_eq!(state.fips.len(), 2);
            assert!(!state.counties.is_empty());
            let county_total: u32 = state.counties.iter().map(|c| c.population_k).sum();
            assert!(county_total <= state.population_k, "{}", state.code);
            for county in state.counties {
                assert_eq!(county.fips.len(), 5);
                assert!(county.fips.starts_with(state.fips), "{}", county.name);
                assert!(county_fips.insert(county.fips), "{} twice", county.fips);
                assert_eq!(county.name, county.name.to_uppercase());
            }
        }
    }
}
