//! Campaigns in the dispatcher: defining one (its lineage computed as the
//! reco job computes it), the queue stage of a pass (a task per transferred
//! file for each active campaign, prompt campaigns first), and the last stage
//! (an active campaign with nothing left in flight becomes `complete`).

use anyhow::{bail, Context, Result};
use tpcflow_reco::RecoConfig;

use super::{prompt_conditions, Dispatcher, PassReport};
use crate::catalog::{CampaignRow, CampaignState, Catalog, NewCampaign};
use crate::reco_job;

/// The prompt campaign's name for a conditions tag.
pub fn prompt_campaign_name(tag: &str) -> String {
    format!("prompt-{tag}")
}

/// Define a campaign: its lineage is computed from the conditions and reco
/// configuration exactly as the reco job computes it.
///
/// # Errors
/// Unknown conditions, a bad config, or a name already taken.
pub fn create_campaign(
    catalog: &Catalog,
    name: &str,
    runs: (u32, u32),
    conditions: &str,
    config: &RecoConfig,
    prompt: bool,
) -> Result<CampaignRow> {
    config.validate().context("reco config")?;
    if catalog.campaign_by_name(name)?.is_some() {
        bail!("campaign `{name}` already exists");
    }
    let cond = prompt_conditions::resolve(
        catalog,
        conditions,
        &format!("conditions of campaign {name}"),
    )?;
    let lineage = reco_job::lineage(&cond, config);
    catalog.create_configured_campaign(
        &NewCampaign {
            name: name.into(),
            first_run: runs.0,
            last_run: runs.1,
            conditions_tag: cond.tag.clone(),
            lineage_hash: lineage.hash(),
        },
        &serde_json::to_string(config)?,
        prompt,
    )?;
    catalog
        .campaign_by_name(name)?
        .context("campaign just created")
}
impl Dispatcher {
    /// The queue stage: prompt campaigns synced with the published tags (with
    /// `prompt_conditions` set), then one task per (transferred file, defined
    /// or active campaign), salted files only when `salted_only`; a defined
    /// campaign becomes active. Returns the campaigns with whether each is a
    /// prompt campaign, prompt ones first, for the submit stage.
    pub(super) fn queue(
        &self,
        salted_only: bool,
        report: &mut PassReport,
    ) -> Result<Vec<(CampaignRow, bool)>> {
        if !self.cfg.settings.prompt_conditions.is_empty() {
            prompt_conditions::sync_prompt_campaigns(&self.catalog)?;
        }
        let mut campaigns: Vec<(CampaignRow, bool)> = Vec::new();
        for c in self.catalog.campaigns()? {
            if matches!(c.state, CampaignState::Defined | CampaignState::Active) {
                let (_, prompt) = self.catalog.campaign_extras(c.id)?;
                campaigns.push((c, prompt));
            }
        }
        campaigns.sort_by_key(|(c, prompt)| (!prompt, c.id));
        for (c, _) in &campaigns {
            report.tasks_queued += self.catalog.queue_campaign_tasks(c, salted_only)?;
            if c.state == CampaignState::Defined {
                self.catalog.campaign_transition(
                    c.id,
                    CampaignState::Defined,
                    CampaignState::Active,
                )?;
            }
        }
        Ok(campaigns)
    }

    /// Active campaigns (not prompt) with nothing in flight become `complete`;
    /// a simulation campaign only once every file is made and reconstructed
    /// (or failed).
    pub(super) fn complete_campaigns(&self) -> Result<()> {
        for c in self.catalog.campaigns()? {
            if c.state != CampaignState::Active || self.catalog.campaign_extras(c.id)?.1 {
                continue;
            }
            // A simulation campaign: every file made and reconstructed (or failed).
            if self.catalog.sim_spec(c.id)?.is_some() && !self.catalog.sim_family_settled(c.id)? {
                continue;
            }
            let (in_flight, finished) = self.catalog.campaign_in_flight(c.id)?;
            if in_flight == 0 && finished > 0 {
                self.catalog.campaign_transition(
                    c.id,
                    CampaignState::Active,
                    CampaignState::Complete,
                )?;
            }
        }
        Ok(())
    }
}
