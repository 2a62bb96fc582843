//! The data-movement stages of a pass, each a call of its stage's `run`:
//! ingest (`catalog::ingest`), salting (`salt`), transfer (`transfer`) and
//! retention (`retire`), with their counts and warnings put in the pass
//! report. A stage held off by another process's lock only warns.

use std::path::PathBuf;

use anyhow::Result;

use super::{Dispatcher, PassReport};
use crate::catalog::ingest::{self, IngestConfig};
use crate::catalog::Site;
use crate::transfer::{self, TransferConfig, TransferReport};

impl Dispatcher {
    /// The ingest stage: new complete raw files at SURF.
    pub(super) fn ingest(&self, report: &mut PassReport) -> Result<()> {
        let surf = self.cfg.sites.get(Site::Surf)?.root.clone();
        let ing = ingest::run(&IngestConfig { surf_root: surf }, &self.catalog)?;
        report.ingested = ing.files_registered;
        Ok(())
    }

    /// The salting stage, with a salt key configured: new science files
    /// salted with the conditions in force for their run. Returns whether
    /// salting is configured.
    pub(super) fn salt(&self, report: &mut PassReport) -> Result<bool> {
        let salting = !self.cfg.settings.salt_key.is_empty();
        if salting {
            let sr = crate::salt::run(
                &crate::salt::SaltConfig {
                    surf_root: self.cfg.sites.get(Site::Surf)?.root.clone(),
                    key_file: PathBuf::from(&self.cfg.settings.salt_key),
                    vault_dir: PathBuf::from(&self.cfg.settings.salt_vault),
                    // The conditions in force for each run, as prompt processing.
                    conditions: crate::salt::SaltConditions::InForce,
                },
                &self.catalog,
            )?;
            report.salted = sr.files_salted + sr.files_recovered;
        }
        Ok(salting)
    }

    /// The transfer stage: SURF copies to every destination, salted science
    /// files only when `salting`.
    pub(super) fn transfer(
        &self,
        salting: bool,
        report: &mut PassReport,
    ) -> Result<TransferReport> {
        let tr = match transfer::run(
            &TransferConfig {
                sites: self.cfg.sites.clone(),
                destinations: Site::DESTINATIONS.to_vec(),
                max_attempts: self.cfg.settings.transfer_max_attempts,
                parallel: self.cfg.settings.transfer_parallel,
                retry_failed: false,
                require_salted: salting,
            },
            &self.catalog,
        ) {
            Ok(tr) => tr,
            Err(transfer::TransferError::Locked(e)) => {
                report.warnings.push(format!("transfer stage skipped: {e}"));
                TransferReport::default()
            }
            Err(e) => return Err(e.into()),
        };
        report.replicas_verified = tr.verified;
        report.replicas_failed = tr.failures.len();
        for x in &tr.out_of_space {
            report.warnings.push(format!(
                "{} at {}: destination full, queued for the next pass: {}",
                x.file, x.site, x.reason
            ));
        }
        report.held_unsalted = tr.held_unsalted;
        report.copied_in = tr.copied_in;
        Ok(tr)
    }

    /// The retention stage; a pass held off by the lock only warns.
    pub(super) fn retire(&self, report: &mut PassReport) -> Result<()> {
        let cfg = crate::retire::RetireConfig {
            sites: self.cfg.sites.clone(),
            settings: self.cfg.settings.retention.clone(),
            dry_run: false,
        };
        match crate::retire::run(&cfg, &self.catalog) {
            Ok(r) => {
                report.surf_retired = r.retired.len() + r.finished;
                for k in r.kept {
                    report
                        .warnings
                        .push(format!("SURF copy of {} kept: {}", k.file, k.reason));
                }
                Ok(())
            }
            Err(crate::retire::RetireError::Locked(e)) => {
                report
                    .warnings
                    .push(format!("retention stage skipped: {e}"));
                Ok(())
            }
            Err(e) => Err(e.into()),
        }
    }
}
