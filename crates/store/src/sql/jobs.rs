//! Jobs (reported by the scheduler) and deployments.

use super::rows::{
    id, json, opt_id, opt_int, opt_text, opt_time, opt_u32, text, time, to_json, u32_of,
};
use super::{SqlStore, WriteTx, now, one, unique_violation};
use crate::{Result, StoreError};
use slipway_types::{
    DeployStrategy, Deployment, DeploymentStatus, EventOp, Id, Job, JobState, ObjectType, Timestamp,
};
use sqlx::any::AnyRow;

fn job_from_row(row: &AnyRow) -> Result<Job> {
    let state = text(row, "state")?;
    Ok(Job {
        id: text(row, "id")?,
        app_id: id(row, "app_id")?,
        release_id: id(row, "release_id")?,
        process_type: opt_text(row, "process_type")?,
        host_id: opt_text(row, "host_id")?,
        state: JobState::parse(&state)
            .ok_or_else(|| StoreError::Database(format!("unknown job state {state:?}")))?,
        args: json(row, "args")?,
        exit_status: opt_int(row, "exit_status")?.map(|s| s as i32),
        host_error: opt_text(row, "host_error")?,
        restarts: u32_of(row, "restarts")?,
        meta: json(row, "meta")?,
        created_at: time(row, "created_at")?,
        updated_at: time(row, "updated_at")?,
    })
}

fn deployment_from_row(row: &AnyRow) -> Result<Deployment> {
    let status = text(row, "status")?;
    Ok(Deployment {
        id: id(row, "id")?,
        app_id: id(row, "app_id")?,
        old_release_id: opt_id(row, "old_release_id")?,
        new_release_id: id(row, "new_release_id")?,
        strategy: text(row, "strategy")?.parse::<DeployStrategy>()?,
        status: DeploymentStatus::parse(&status)
            .ok_or_else(|| StoreError::Database(format!("unknown deployment status {status:?}")))?,
        processes: json(row, "processes")?,
        deploy_timeout: u32_of(row, "deploy_timeout")?,
        deploy_batch_size: opt_u32(row, "deploy_batch_size")?,
        error: opt_text(row, "error")?,
        created_at: time(row, "created_at")?,
        finished_at: opt_time(row, "finished_at")?,
    })
}

impl SqlStore {
    pub async fn put_job(&self, job: &Job) -> Result<Job> {
        let mut tx = self.begin().await?;
        let job = self.put_job_tx(&mut tx, job).await?;
        self.commit(tx).await?;
        Ok(job)
    }

    /// Many job writes in one transaction (one commit instead of one per job: the scheduler's
    /// rows keep up with 10,000 jobs). All or nothing.
    pub async fn put_jobs(&self, jobs: &[Job]) -> Result<Vec<Job>> {
        let mut tx = self.begin().await?;
        let mut out = Vec::with_capacity(jobs.len());
        for job in jobs {
            out.push(self.put_job_tx(&mut tx, job).await?);
        }
        self.commit(tx).await?;
        Ok(out)
    }

    pub(crate) async fn put_job_tx(&self, tx: &mut WriteTx, job: &Job) -> Result<Job> {
        job.validate()?;
        let app = self.get_app_tx(tx, job.app_id).await?;
        // The nil release id: a job that belongs to no release, like the build of an app's
        // first push (its release does not exist until the build has made the slug).
        if !job.release_id.is_nil() {
            let release = self.release_tx(tx, job.release_id).await?;
            if release.app_id != app.id {
                return Err(StoreError::NotFound(format!(
                    "release {} not found in app {}",
                    release.id, app.name
                )));
            }
        }
        let existing: Option<String> =
            sqlx::query_scalar("SELECT created_at FROM jobs WHERE id = $1")
                .bind(job.id.clone())
                .fetch_optional(&mut ***tx)
                .await?;
        let mut job = job.clone();
        let op = match existing {
            Some(created) => {
                job.created_at =
                    Timestamp::parse(&created).map_err(|e| StoreError::Database(e.to_string()))?;
                EventOp::Update
            }
            None => EventOp::Create,
        };
        job.updated_at = Timestamp::now();
        sqlx::query(
            "INSERT INTO jobs (id, app_id, release_id, process_type, host_id, state, args, exit_status, host_error, restarts, meta, created_at, updated_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13) \
             ON CONFLICT (id) DO UPDATE SET host_id = excluded.host_id, state = excluded.state, exit_status = excluded.exit_status, \
             host_error = excluded.host_error, restarts = excluded.restarts, meta = excluded.meta, updated_at = excluded.updated_at",
        )
        .bind(job.id.clone())
        .bind(job.app_id.to_string())
        .bind(job.release_id.to_string())
        .bind(job.process_type.clone())
        .bind(job.host_id.clone())
        .bind(job.state.as_str())
        .bind(to_json(&job.args))
        .bind(job.exit_status.map(i64::from))
        .bind(job.host_error.clone())
        .bind(i64::from(job.restarts))
        .bind(to_json(&job.meta))
        .bind(job.created_at.to_string())
        .bind(job.updated_at.to_string())
        .execute(&mut ***tx)
        .await?;
        self.append_event(tx, Some(job.app_id), ObjectType::Job, &job.id, op, &job)
            .await?;
        Ok(job)
    }

    pub async fn get_job(&self, app_id: Id, job_id: &str) -> Result<Job> {
        let row = sqlx::query("SELECT * FROM jobs WHERE app_id = $1 AND id = $2")
            .bind(app_id.to_string())
            .bind(job_id.to_string())
            .fetch_optional(self.pool())
            .await?;
        job_from_row(&one(row, "job", job_id)?)
    }

    pub async fn list_jobs(&self, app_id: Id) -> Result<Vec<Job>> {
        let rows = sqlx::query("SELECT * FROM jobs WHERE app_id = $1 ORDER BY created_at, id")
            .bind(app_id.to_string())
            .fetch_all(self.pool())
            .await?;
        rows.iter().map(job_from_row).collect()
    }

    pub async fn create_deployment(&self, app_id: Id, release_id: Id) -> Result<Deployment> {
        let mut tx = self.begin().await?;
        let app = self.get_app_tx(&mut tx, app_id).await?;
        let release = self.release_tx(&mut tx, release_id).await?;
        if release.app_id != app_id {
            return Err(StoreError::NotFound(format!(
                "release {release_id} not found in app {}",
                app.name
            )));
        }
        if app.release == Some(release_id) {
            return Err(StoreError::Conflict(format!(
                "release {release_id} is already the current release of {}",
                app.name
            )));
        }
        // The new release runs with the counts the app runs now, limited to the types it has.
        let processes = match app.release {
            Some(old) => self
                .formation_tx(&mut tx, app_id, old)
                .await?
                .map(|f| f.processes)
                .unwrap_or_default(),
            None => Default::default(),
        }
        .into_iter()
        .filter(|(t, _)| release.processes.contains_key(t))
        .collect();
        let deployment = Deployment {
            id: Id::new_v4(),
            app_id,
            old_release_id: app.release,
            new_release_id: release_id,
            strategy: app.strategy,
            status: DeploymentStatus::Pending,
            processes,
            deploy_timeout: app.deploy_timeout,
            deploy_batch_size: app.deploy_batch_size,
            error: None,
            created_at: Timestamp::now(),
            finished_at: None,
        };
        sqlx::query(
            "INSERT INTO deployments (id, app_id, old_release_id, new_release_id, strategy, status, processes, deploy_timeout, deploy_batch_size, error, created_at, finished_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, NULL, $10, NULL)",
        )
        .bind(deployment.id.to_string())
        .bind(app_id.to_string())
        .bind(deployment.old_release_id.map(|r| r.to_string()))
        .bind(release_id.to_string())
        .bind(deployment.strategy.as_str())
        .bind(deployment.status.as_str())
        .bind(to_json(&deployment.processes))
        .bind(i64::from(deployment.deploy_timeout))
        .bind(deployment.deploy_batch_size.map(i64::from))
        .bind(deployment.created_at.to_string())
        .execute(&mut **tx)
        .await
        .map_err(unique_violation("Cannot create deploy, there is already one in progress for this app."))?;
        self.commit_with_event(
            tx,
            Some(app_id),
            ObjectType::Deployment,
            &deployment.id.to_string(),
            EventOp::Create,
            &deployment,
        )
        .await?;
        Ok(deployment)
    }

    pub async fn get_deployment(&self, deployment_id: Id) -> Result<Deployment> {
        let row = sqlx::query("SELECT * FROM deployments WHERE id = $1")
            .bind(deployment_id.to_string())
            .fetch_optional(self.pool())
            .await?;
        deployment_from_row(&one(row, "deployment", deployment_id)?)
    }

    pub async fn list_deployments(&self, app_id: Id) -> Result<Vec<Deployment>> {
        let rows = sqlx::query(
            "SELECT * FROM deployments WHERE app_id = $1 ORDER BY created_at DESC, id DESC",
        )
        .bind(app_id.to_string())
        .fetch_all(self.pool())
        .await?;
        rows.iter().map(deployment_from_row).collect()
    }

    pub async fn update_deployment(
        &self,
        deployment_id: Id,
        status: DeploymentStatus,
        error: Option<&str>,
    ) -> Result<Deployment> {
        let mut tx = self.begin().await?;
        let row = sqlx::query("SELECT * FROM deployments WHERE id = $1")
            .bind(deployment_id.to_string())
            .fetch_optional(&mut **tx)
            .await?;
        let mut d = deployment_from_row(&one(row, "deployment", deployment_id)?)?;
        if d.status.is_finished() {
            return Err(StoreError::Conflict(format!(
                "deployment {deployment_id} has already {}",
                d.status.as_str()
            )));
        }
        d.status = status;
        d.error = error.map(str::to_string);
        d.finished_at = status.is_finished().then(Timestamp::now);
        sqlx::query(
            "UPDATE deployments SET status = $1, error = $2, finished_at = $3 WHERE id = $4",
        )
        .bind(status.as_str())
        .bind(d.error.clone())
        .bind(d.finished_at.map(|t| t.to_string()))
        .bind(deployment_id.to_string())
        .execute(&mut **tx)
        .await?;
        self.append_event(
            &mut tx,
            Some(d.app_id),
            ObjectType::Deployment,
            &deployment_id.to_string(),
            EventOp::Update,
            &d,
        )
        .await?;
        if status == DeploymentStatus::Complete {
            let release = self.release_tx(&mut tx, d.new_release_id).await?;
            sqlx::query("UPDATE apps SET release_id = $1, updated_at = $2 WHERE id = $3")
                .bind(d.new_release_id.to_string())
                .bind(now())
                .bind(d.app_id.to_string())
                .execute(&mut **tx)
                .await?;
            self.append_event(
                &mut tx,
                Some(d.app_id),
                ObjectType::AppRelease,
                &d.app_id.to_string(),
                EventOp::Update,
                &release,
            )
            .await?;
        }
        self.commit(tx).await?;
        Ok(d)
    }
}
