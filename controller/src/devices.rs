//! `qkd devices probe`: connect to every serial device of a configuration file and report what
//! each says about itself, so an operator sees at once which cable or setting is wrong.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use clap::Subcommand;
use qkd_drivers::serial::{DetectorNominals, DeviceConfig, DeviceKind};
use qkd_drivers::{DeviceIdentity, PolarizationController, SinglePhotonDetectors, WcpSource};
use serde::{Deserialize, Serialize};

/// Commands about the configured devices.
#[derive(Debug, Subcommand)]
pub enum DevicesCommand {
    /// Connect to each configured device and print its identity and readings.
    Probe(ProbeArgs),
}

/// Flags of `qkd devices probe`.
#[derive(Debug, Clone, clap::Args)]
pub struct ProbeArgs {
    /// The devices file (JSON: `{"devices": {"name": {"kind": …, "port": …}, …}}`).
    #[arg(long)]
    pub config: PathBuf,
    /// Print one JSON object on stdout.
    #[arg(long)]
    pub json: bool,
}

/// The devices file.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct DevicesFile {
    #[serde(deserialize_with = "unique_names")]
    devices: BTreeMap<String, DeviceConfig>,
}

/// The devices by name, refusing a name given twice: JSON allows it, and keeping only the
/// last would leave a device the operator configured silently unused.
fn unique_names<'de, D>(deserializer: D) -> Result<BTreeMap<String, DeviceConfig>, D::Error>
where
    D: serde::Deserializer<'de>,
{
    struct Names;
    impl<'de> serde::de::Visitor<'de> for Names {
        type Value = BTreeMap<String, DeviceConfig>;
        fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str("an object of devices by name")
        }
        fn visit_map<A: serde::de::MapAccess<'de>>(
            self,
            mut map: A,
        ) -> Result<Self::Value, A::Error> {
            let mut devices = BTreeMap::new();
            while let Some((name, config)) = map.next_entry::<String, DeviceConfig>()? {
                if devices.insert(name.clone(), config).is_some() {
                    return Err(serde::de::Error::custom(format!(
                        "device `{name}` is named twice"
                    )));
                }
            }
            if devices.is_empty() {
                return Err(serde::de::Error::custom("no devices: name at least one"));
            }
            Ok(devices)
        }
    }
    deserializer.deserialize_map(Names)
}

/// What one device answered.
#[derive(Debug, Serialize)]
struct Probe {
    name: String,
    kind: &'static str,
    port: String,
    ok: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    identity: Option<String>,
    /// Actuator values (device units) or 100 ms of counts per channel.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    readings: Vec<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    error: Option<String>,
}

async fn read(config: &DeviceConfig) -> Result<(DeviceIdentity, Vec<f64>)> {
    Ok(match config.kind {
        DeviceKind::PolarizationBoard | DeviceKind::Mpc320 | DeviceKind::OzEpc => {
            let mut controller = config.open_polarization().await?;
            let values = controller.get().await?;
            (controller.identity().clone(), values)
        }
        DeviceKind::DetectorBoard => {
            let mut detectors = config.open_detectors(DetectorNominals::default()).await?;
            let counts = detectors.counts(Duration::from_millis(100)).await?;
            (
                detectors.identity().clone(),
                counts.iter().map(|&c| c as f64).collect(),
            )
        }
        DeviceKind::SourceBoard => {
            let mut source = config.open_source().await?;
            let power = source.monitor_power_fw().await?;
            (source.identity().clone(), vec![f64::from(power)])
        }
    })
}

pub fn run(command: &DevicesCommand) -> Result<()> {
    let DevicesCommand::Probe(args) = command;
    let text = std::fs::read_to_string(&args.config)
        .with_context(|| format!("reading {}", args.config.display()))?;
    let file: DevicesFile = serde_json::from_str(&text)
        .with_context(|| format!("{} is not a valid devices file", args.config.display()))?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let mut probes = Vec::new();
    for (name, config) in &file.devices {
        let outcome = runtime.block_on(read(config));
        probes.push(Probe {
            name: name.clone(),
            kind: config.kind.name(),
            port: config.port.display().to_string(),
            ok: outcome.is_ok(),
            identity: outcome.as_ref().ok().map(|(id, _)| id.to_string()),
            readings: outcome.as_ref().map(|(_, r)| r.clone()).unwrap_or_default(),
            error: outcome.err().map(|e| format!("{e:#}")),
        });
    }
    if args.json {
        println!(
            "{}",
            serde_json::to_string_pretty(&serde_json::json!({ "devices": probes }))?
        );
    } else {
        for p in &probes {
            match (&p.identity, &p.error) {
                (Some(id), _) => println!(
                    "{:<12} {:<18} {}  {id}  {:?}",
                    p.name, p.kind, p.port, p.readings
                ),
                (None, Some(e)) => {
                    println!("{:<12} {:<18} {}  FAILED: {e}", p.name, p.kind, p.port);
                }
                (None, None) => {}
            }
        }
    }
    let failed: Vec<&str> = probes
        .iter()
        .filter(|p| !p.ok)
        .map(|p| p.name.as_str())
        .collect();
    if !failed.is_empty() {
        bail!(
            "{} of {} devices did not answer: {}",
            failed.len(),
            probes.len(),
            failed.join(", ")
        );
    }
    Ok(())
}
