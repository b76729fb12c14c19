//! Customers in real cities (Poland, Ukraine, Slovakia, Czechia, Germany) with their
//! languages, time zones and preferred channels; technicians with skills, home bases and
//! shifts.

use rand::Rng;
use rand::seq::SliceRandom;

#[derive(Debug, Clone, Copy)]
pub struct City {
    pub name: &'static str,
    pub country: &'static str,
    pub latitude: f64,
    pub longitude: f64,
    pub timezone: &'static str,
    pub language: &'static str,
    /// Relative population weight.
    pub weight: f64,
}

pub const CITIES: &[City] = &[
    City {
        name: "Warszawa",
        country: "PL",
        latitude: 52.2297,
        longitude: 21.0122,
        timezone: "Europe/Warsaw",
        language: "pl",
        weight: 1.8,
    },
    City {
        name: "Kraków",
        country: "PL",
        latitude: 50.0647,
        longitude: 19.9450,
        timezone: "Europe/Warsaw",
        language: "pl",
        weight: 0.8,
    },
    City {
        name: "Wrocław",
        country: "PL",
        latitude: 51.1079,
        longitude: 17.0385,
        timezone: "Europe/Warsaw",
        language: "pl",
        weight: 0.65,
    },
    City {
        name: "Gdańsk",
        country: "PL",
        latitude: 54.3520,
        longitude: 18.6466,
        timezone: "Europe/Warsaw",
        language: "pl",
        weight: 0.5,
    },
    City {
        name: "Poznań",
        country: "PL",
        latitude: 52.4064,
        longitude: 16.9252,
        timezone: "Europe/Warsaw",
        language: "pl",
        weight: 0.55,
    },
    City {
        name: "Łódź",
        country: "PL",
        latitude: 51.7592,
        longitude: 19.4560,
        timezone: "Europe/Warsaw",
        language: "pl",
        weight: 0.65,
    },
    City {
        name: "Kyiv",
        country: "UA",
        latitude: 50.4501,
        longitude: 30.5234,
        timezone: "Europe/Kyiv",
        language: "uk",
        weight: 2.9,
    },
    City {
        name: "Lviv",
        country: "UA",
        latitude: 49.8397,
        longitude: 24.0297,
        timezone: "Europe/Kyiv",
        language: "uk",
        weight: 0.7,
    },
    City {
        name: "Kharkiv",
        country: "UA",
        latitude: 49.9935,
        longitude: 36.2304,
        timezone: "Europe/Kyiv",
        language: "uk",
        weight: 1.4,
    },
    City {
        name: "Odesa",
        country: "UA",
        latitude: 46.4825,
        longitude: 30.7233,
        timezone: "Europe/Kyiv",
        language: "uk",
        weight: 1.0,
    },
    City {
        name: "Dnipro",
        country: "UA",
        latitude: 48.4647,
        longitude: 35.0462,
        timezone: "Europe/Kyiv",
        language: "uk",
        weight: 0.95,
    },
    City {
        name: "Bratislava",
        country: "SK",
        latitude: 48.1486,
        longitude: 17.1077,
        timezone: "Europe/Bratislava",
        language: "sk",
        weight: 0.45,
    },
    City {
        name: "Košice",
        country: "SK",
        latitude: 48.7164,
        longitude: 21.2611,
        timezone: "Europe/Bratislava",
        language: "sk",
        weight: 0.24,
    },
    City {
        name: "Žilina",
        country: "SK",
        latitude: 49.2231,
        longitude: 18.7394,
        timezone: "Europe/Bratislava",
        language: "sk",
        weight: 0.08,
    },
    City {
        name: "Praha",
        country: "CZ",
        latitude: 50.0755,
        longitude: 14.4378,
        timezone: "Europe/Prague",
        language: "cs",
        weight: 1.3,
    },
    City {
        name: "Brno",
        country: "CZ",
        latitude: 49.1951,
        longitude: 16.6068,
        timezone: "Europe/Prague",
        language: "cs",
        weight: 0.38,
    },
    City {
        name: "Ostrava",
        country: "CZ",
        latitude: 49.8209,
        longitude: 18.2625,
        timezone: "Europe/Prague",
        language: "cs",
        weight: 0.28,
    },
    City {
        name: "Berlin",
        country: "DE",
        latitude: 52.5200,
        longitude: 13.4050,
        timezone: "Europe/Berlin",
        language: "de",
        weight: 3.6,
    },
    City {
        name: "München",
        country: "DE",
        latitude: 48.1351,
        longitude: 11.5820,
        timezone: "Europe/Berlin",
        language: "de",
        weight: 1.5,
    },
    City {
        name: "Hamburg",
        country: "DE",
        latitude: 53.5511,
        longitude: 9.9937,
        timezone: "Europe/Berlin",
        language: "de",
        weight: 1.8,
    },
    City {
        name: "Köln",
        country: "DE",
        latitude: 50.9375,
        longitude: 6.9603,
        timezone: "Europe/Berlin",
        language: "de",
        weight: 1.1,
    },
    City {
        name: "Dresden",
        country: "DE",
        latitude: 51.0504,
        longitude: 13.7373,
        timezone: "Europe/Berlin",
        language: "de",
        weight: 0.55,
    },
];

const FIRST_NAMES: &[&str] = &[
    "Anna", "Piotr", "Olena", "Taras", "Jana", "Martin", "Lukas", "Sofia", "Marek", "Iryna", "Eva",
    "Jonas",
];
const LAST_NAMES: &[&str] = &[
    "Nowak",
    "Kowalski",
    "Shevchenko",
    "Bondarenko",
    "Horváth",
    "Novák",
    "Svoboda",
    "Müller",
    "Schmidt",
    "Kovalenko",
    "Wiśniewska",
    "Dvořák",
];
const STREETS: &[&str] = &[
    "Main St",
    "Park Ave",
    "Station Rd",
    "Market Sq",
    "River Ln",
    "Hill St",
];

#[derive(Debug, Clone, serde::Serialize)]
pub struct Customer {
    pub external_id: String,
    pub name: String,
    pub email: String,
    pub phone: String,
    pub preferred_channel: &'static str,
    pub language: &'static str,
    pub timezone: &'static str,
    pub quiet_hours: (u32, u32),
    pub tier: &'static str,
    pub address: String,
    pub city: &'static str,
    pub country: &'static str,
    pub latitude: f64,
    pub longitude: f64,
}

#[derive(Debug, Clone, serde::Serialize)]
pub struct Technician {
    pub external_id: String,
    pub name: String,
    pub email: String,
    pub skills: Vec<String>,
    pub city: &'static str,
    pub latitude: f64,
    pub longitude: f64,
    pub timezone: &'static str,
    pub shift_days: Vec<i16>,
    pub shift_start_hour: u32,
    pub shift_end_hour: u32,
}

pub fn pick_city(rng: &mut impl Rng) -> &'static City {
    let total: f64 = CITIES.iter().map(|c| c.weight).sum();
    let mut point = rng.gen_range(0.0..total);
    for city in CITIES {
        if point < city.weight {
            return city;
        }
        point -= city.weight;
    }
    &CITIES[0]
}

pub fn customer(index: usize, rng: &mut impl Rng) -> Customer {
    let city = pick_city(rng);
    let first = FIRST_NAMES.choose(rng).copied().unwrap_or("Alex");
    let last = LAST_NAMES.choose(rng).copied().unwrap_or("Smith");
    // Mostly the city's language; some customers prefer English, and many Ukrainians live in
    // Poland, Czechia and Germany.
    let language = match rng.gen_range(0..100) {
        0..=9 => "en",
        10..=17 if city.country != "UA" => "uk",
        _ => city.language,
    };
    let preferred_channel = match rng.gen_range(0..100) {
        0..=49 => "email",
        50..=79 => "sms",
        80..=94 => "push",
        _ => "webhook",
    };
    let tier = if rng.gen_bool(0.15) {
        "premium"
    } else {
        "standard"
    };
    Customer {
        external_id: format!("CUST-{index:05}"),
        name: format!("{first} {last}"),
        email: format!("customer{index:05}@example.test"),
        phone: format!(
            "+{}{:09}",
            country_code(city.country),
            rng.gen_range(100_000_000u32..999_999_999)
        ),
        preferred_channel,
        language,
        timezone: city.timezone,
        quiet_hours: (rng.gen_range(21..=23), rng.gen_range(6..=8)),
        tier,
        address: format!(
            "{} {}",
            rng.gen_range(1..200),
            STREETS.choose(rng).copied().unwrap_or("Main St")
        ),
        city: city.name,
        country: city.country,
        latitude: city.latitude + rng.gen_range(-0.08..0.08),
        longitude: city.longitude + rng.gen_range(-0.12..0.12),
    }
}

fn country_code(country: &str) -> u32 {
    match country {
        "PL" => 48,
        "UA" => 380,
        "SK" => 421,
        "CZ" => 420,
        _ => 49,
    }
}

/// Technicians: at least two per city, each skilled in two or three kinds.
pub fn technicians(rng: &mut impl Rng) -> Vec<Technician> {
    let kinds = ["washer", "fridge", "car", "camera", "pump"];
    let mut technicians = Vec::new();
    for city in CITIES {
        let n_here = 2 + (city.weight * 1.5) as usize;
        for _ in 0..n_here {
            let index = technicians.len();
            let n_skills = rng.gen_range(2..=3);
            let mut skills: Vec<String> = kinds
                .choose_multiple(rng, n_skills)
                .map(|k| format!("{k}/*"))
                .collect();
            skills.sort();
            let weekend = rng.gen_bool(0.3);
            let start = rng.gen_range(7..=10);
            technicians.push(Technician {
                external_id: format!("TECH-{index:03}"),
                name: format!(
                    "{} {}",
                    FIRST_NAMES.choose(rng).copied().unwrap_or("Alex"),
                    LAST_NAMES.choose(rng).copied().unwrap_or("Smith")
                ),
                email: format!("tech{index:03}@example.test"),
                skills,
                city: city.name,
                latitude: city.latitude + rng.gen_range(-0.05..0.05),
                longitude: city.longitude + rng.gen_range(-0.05..0.05),
                timezone: city.timezone,
                shift_days: if weekend {
                    vec![3, 4, 5, 6, 7]
                } else {
                    vec![1, 2, 3, 4, 5]
                },
                shift_start_hour: start,
                shift_end_hour: start + 8,
            });
        }
    }
    technicians
}
