//! The vocabularies: enums of the values a field may take, each written as
//! the data set's own string.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use super::text::InvalidValue;

/// Defines a closed vocabulary as an enum whose serde names are the data
/// set's own strings.
macro_rules! vocabulary {
    (
        $(#[$meta:meta])*
        $name:ident {
            $( $(#[$vmeta:meta])* $variant:ident = $text:literal, )+
        }
    ) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
        pub enum $name {
            $( $(#[$vmeta])* #[serde(rename = $text)] $variant, )+
        }

        impl $name {
            /// Every value, in schema order.
            pub const ALL: &'static [$name] = &[$($name::$variant),+];

            /// The string this value is written as.
            pub const fn as_str(self) -> &'static str {
                match self {
                    $( $name::$variant => $text, )+
                }
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.as_str())
            }
        }

        impl FromStr for $name {
            type Err = InvalidValue;

            fn from_str(s: &str) -> Result<Self, InvalidValue> {
                match s {
                    $( $text => Ok($name::$variant), )+
                    _ => Err(InvalidValue::new(stringify!($name), s, "a value of the vocabulary")),
                }
            }
        }
    };
}

vocabulary! {
    /// A yes/no answer with the data set's codes for missing answers.
    YesNo {
        /// Yes.
        Yes = "Yes",
        /// No.
        No = "No",
        /// Reported as unknown.
        Unknown = "Unknown",
        /// Left blank by the reporting jurisdiction.
        Missing = "Missing",
        /// Not available from the reporting jurisdiction.
        NA = "NA",
    }
}

vocabulary! {
    /// Age group of a case.
    AgeGroup {
        /// 0 to 17 years.
        Age0To17 = "0 - 17 years",
        /// 18 to 49 years.
        Age18To49 = "18 to 49 years",
        /// 50 to 64 years.
        Age50To64 = "50 to 64 years",
        /// 65 years and over.
        Age65Plus = "65+ years",
        /// Left blank.
        Missing = "Missing",
        /// Not available.
        NA = "NA",
    }
}

vocabulary! {
    /// Sex of a case.
    Sex {
        /// Female.
        Female = "Female",
        /// Male.
        Male = "Male",
        /// Other.
        Other = "Other",
        /// Reported as unknown.
        Unknown = "Unknown",
        /// Left blank.
        Missing = "Missing",
        /// Not available.
        NA = "NA",
    }
}

vocabulary! {
    /// Race of a case, in the data set's categories.
    Race {
        /// American Indian/Alaska Native.
        AmericanIndianAlaskaNative = "American Indian/Alaska Native",
        /// Asian.
        Asian = "Asian",
        /// Black.
        Black = "Black",
        /// Multiple/Other.
        MultipleOther = "Multiple/Other",
        /// Native Hawaiian/Other Pacific Islander.
        NativeHawaiianPacificIslander = "Native Hawaiian/Other Pacific Islander",
        /// White.
        White = "White",
        /// Reported as unknown.
        Unknown = "Unknown",
        /// Left blank.
        Missing = "Missing",
        /// Not available.
        NA = "NA",
    }
}

vocabulary! {
    /// Ethnicity of a case.
    Ethnicity {
        /// Hispanic/Latino.
        HispanicLatino = "Hispanic/Latino",
        /// Non-Hispanic/Latino.
        NonHispanicLatino = "Non-Hispanic/Latino",
        /// Reported as unknown.
        Unknown = "Unknown",
        /// Left blank.
        Missing = "Missing",
        /// Not available.
        NA = "NA",
    }
}

vocabulary! {
    /// How a case was first identified.
    Process {
        /// Clinical evaluation.
        ClinicalEvaluation = "Clinical evaluation",
        /// Contact tracing of case patient.
        ContactTracing = "Contact tracing of case patient",
        /// Laboratory reported.
        LaboratoryReported = "Laboratory reported",
        /// Multiple.
        Multiple = "Multiple",
        /// Other.
        Other = "Other",
        /// Other detection method (specify).
        OtherDetectionMethod = "Other detection method (specify)",
        /// Provider reported.
        ProviderReported = "Provider reported",
        /// Routine physical examination.
        RoutinePhysicalExamination = "Routine physical examination",
        /// Routine surveillance.
        RoutineSurveillance = "Routine surveillance",
        /// Reported as unknown.
        Unknown = "Unknown",
        /// Left blank.
        Missing = "Missing",
        /// Not available.
        NA = "NA",
    }
}

vocabulary! {
    /// Case classification.
    CurrentStatus {
        /// Laboratory-confirmed case.
        LaboratoryConfirmed = "Laboratory-confirmed case",
        /// Probable case.
        Probable = "Probable Case",
    }
}

vocabulary! {
    /// Whether a case had symptoms.
    SymptomStatus {
        /// Asymptomatic.
        Asymptomatic = "Asymptomatic",
        /// Symptomatic.
        Symptomatic = "Symptomatic",
        /// Reported as unknown.
        Unknown = "Unknown",
        /// Left blank.
        Missing = "Missing",
        /// Not available.
        NA = "NA",
    }
}

vocabulary! {
    /// WHO region.
    WhoRegion {
        /// African Region.
        Afro = "AFRO",
        /// Region of the Americas.
        Amro = "AMRO",
        /// Eastern Mediterranean Region.
        Emro = "EMRO",
        /// European Region.
        Euro = "EURO",
        /// South-East Asia Region.
        Searo = "SEARO",
        /// Western Pacific Region.
        Wpro = "WPRO",
        /// Not a region: international conveyances and the like.
        Other = "OTHER",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn vocabularies_parse_their_own_strings() {
        for v in Race::ALL {
            assert_eq!(v.as_str().parse::<Race>().unwrap(), *v);
        }
        assert!("white".parse::<Race>().is_err());
    }
}
