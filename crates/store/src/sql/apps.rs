//! Apps: create (with the default route), read, update, delete with everything they own.

use super::rows::{id, json, opt_id, opt_u32, text, time, to_json, u32_of};
use super::{SqlStore, WriteTx, now, one, unique_violation};
use crate::{Result, StoreError};
use slipway_types::{
    App, AppDeletion, AppUpdate, DeployStrategy, EventOp, Id, NewApp, NewRoute, ObjectType, Route,
};
use sqlx::any::AnyRow;

const APP_COLUMNS: &str = "id, name, meta, strategy, deploy_timeout, deploy_batch_size, release_id, created_at, updated_at";

fn app_from_row(row: &AnyRow) -> Result<App> {
    let strategy: String = text(row, "strategy")?;
    Ok(App {
        id: id(row, "id")?,
        name: text(row, "name")?,
        meta: json(row, "meta")?,
        strategy: strategy.parse::<DeployStrategy>()?,
        deploy_timeout: u32_of(row, "deploy_timeout")?,
        deploy_batch_size: opt_u32(row, "deploy_batch_size")?,
        release: opt_id(row, "release_id")?,
        created_at: time(row, "created_at")?,
        updated_at: time(row, "updated_at")?,
    })
}

impl SqlStore {
    pub async fn create_app(
        &self,
        name: &str,
        new: &NewApp,
        default_domain: Option<&str>,
    ) -> Result<App> {
        slipway_types::validate_app_name(name)?;
        new.validate()?;
        let ts = now();
        let app = App {
            id: Id::new_v4(),
            name: name.to_string(),
            meta: new.meta.clone(),
            strategy: new.strategy.unwrap_or_default(),
            deploy_timeout: new
                .deploy_timeout
                .unwrap_or(slipway_types::DEFAULT_DEPLOY_TIMEOUT),
            deploy_batch_size: new.deploy_batch_size,
            release: None,
            created_at: slipway_types::Timestamp::parse(&ts).expect("own format"),
            updated_at: slipway_types::Timestamp::parse(&ts).expect("own format"),
        };
        let mut tx = self.begin().await?;
        sqlx::query(
            "INSERT INTO apps (id, name, meta, strategy, deploy_timeout, deploy_batch_size, release_id, created_at, updated_at) \
             VALUES ($1, $2, $3, $4, $5, $6, NULL, $7, $7)",
        )
        .bind(app.id.to_string())
        .bind(app.name.clone())
        .bind(to_json(&app.meta))
        .bind(app.strategy.as_str())
        .bind(i64::from(app.deploy_timeout))
        .bind(app.deploy_batch_size.map(i64::from))
        .bind(ts)
        .execute(&mut **tx)
        .await
        .map_err(unique_violation(format!("an app named {name:?} already exists")))?;
        self.append_event(
            &mut tx,
            Some(app.id),
            ObjectType::App,
            &app.id.to_string(),
            EventOp::Create,
            &app,
        )
        .await?;
        if let Some(domain) = default_domain {
            let mut route = NewRoute::Http {
                domain: format!("{name}.{domain}"),
                path: None,
                service: Some(format!("{name}-web")),
                sticky: false,
                leader: false,
                certificate: None,
            };
            route.normalize()?;
            self.insert_route(&mut tx, app.id, &route).await.map_err(|e| match e {
                StoreError::Conflict(_) => StoreError::Conflict(format!(
                    "the default route {name}.{domain} already belongs to another app; remove that route or choose another name"
                )),
                other => other,
            })?;
        }
        self.commit(tx).await?;
        Ok(app)
    }

    pub async fn get_app(&self, id: Id) -> Result<App> {
        let row = sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT {APP_COLUMNS} FROM apps WHERE id = $1"
        )))
        .bind(id.to_string())
        .fetch_optional(self.pool())
        .await?;
        app_from_row(&one(row, "app", id)?)
    }

    pub async fn find_app(&self, name: &str) -> Result<App> {
        let row = sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT {APP_COLUMNS} FROM apps WHERE name = $1"
        )))
        .bind(name.to_string())
        .fetch_optional(self.pool())
        .await?;
        app_from_row(&one(row, "app", format_args!("{name:?}"))?)
    }

    pub(crate) async fn get_app_tx(&self, tx: &mut WriteTx, app_id: Id) -> Result<App> {
        let row = sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT {APP_COLUMNS} FROM apps WHERE id = $1"
        )))
        .bind(app_id.to_string())
        .fetch_optional(&mut ***tx)
        .await?;
        app_from_row(&one(row, "app", app_id)?)
    }

    pub async fn list_apps(&self) -> Result<Vec<App>> {
        let rows = sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT {APP_COLUMNS} FROM apps ORDER BY created_at, name"
        )))
        .fetch_all(self.pool())
        .await?;
        rows.iter().map(app_from_row).collect()
    }

    pub async fn update_app(&self, app_id: Id, update: &AppUpdate) -> Result<App> {
        update.validate()?;
        let mut tx = self.begin().await?;
        let mut app = self.get_app_tx(&mut tx, app_id).await?;
        if let Some(meta) = &update.meta {
            app.meta = meta.clone();
        }
        if let Some(s) = update.strategy {
            app.strategy = s;
        }
        if let Some(t) = update.deploy_timeout {
            app.deploy_timeout = t;
        }
        if let Some(b) = update.deploy_batch_size {
            app.deploy_batch_size = Some(b);
        }
        app.updated_at = slipway_types::Timestamp::now();
        sqlx::query(
            "UPDATE apps SET meta = $1, strategy = $2, deploy_timeout = $3, deploy_batch_size = $4, updated_at = $5 WHERE id = $6",
        )
        .bind(to_json(&app.meta))
        .bind(app.strategy.as_str())
        .bind(i64::from(app.deploy_timeout))
        .bind(app.deploy_batch_size.map(i64::from))
        .bind(app.updated_at.to_string())
        .bind(app.id.to_string())
        .execute(&mut **tx)
        .await?;
        self.commit_with_event(
            tx,
            Some(app.id),
            ObjectType::App,
            &app.id.to_string(),
            EventOp::Update,
            &app,
        )
        .await?;
        Ok(app)
    }

    pub async fn delete_app(&self, app_id: Id) -> Result<AppDeletion> {
        let mut tx = self.begin().await?;
        let app = self.get_app_tx(&mut tx, app_id).await?;
        let key = app_id.to_string();
        let routes: Vec<Route> = self.routes_tx(&mut tx, Some(app_id)).await?;
        let releases: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM releases WHERE app_id = $1")
            .bind(key.clone())
            .fetch_one(&mut **tx)
            .await?;
        let artifact_ids: Vec<String> = sqlx::query_scalar(
            "SELECT DISTINCT ra.artifact_id FROM release_artifacts ra JOIN releases r ON r.id = ra.release_id WHERE r.app_id = $1",
        )
        .bind(key.clone())
        .fetch_all(&mut **tx)
        .await?;
        // Rows that reference the app go with it (ON DELETE CASCADE): releases and their artifact
        // links, formations, jobs, deployments, routes.
        sqlx::query("DELETE FROM apps WHERE id = $1")
            .bind(key.clone())
            .execute(&mut **tx)
            .await?;
        let mut artifacts = 0;
        for artifact in artifact_ids {
            artifacts += sqlx::query(
                "DELETE FROM artifacts WHERE id = $1 AND NOT EXISTS (SELECT 1 FROM release_artifacts WHERE artifact_id = $1)",
            )
            .bind(artifact)
            .execute(&mut **tx)
            .await?
            .rows_affected();
        }
        for route in &routes {
            self.append_event(
                &mut tx,
                Some(app_id),
                ObjectType::Route,
                &route.id().to_string(),
                EventOp::Delete,
                route,
            )
            .await?;
        }
        self.commit_with_event(
            tx,
            Some(app_id),
            ObjectType::App,
            &key,
            EventOp::Delete,
            &app,
        )
        .await?;
        Ok(AppDeletion {
            app: app.name,
            routes: routes.len() as u64,
            releases: releases as u64,
            artifacts,
        })
    }

    pub async fn set_app_release(&self, app_id: Id, release_id: Id) -> Result<App> {
        let mut tx = self.begin().await?;
        let mut app = self.get_app_tx(&mut tx, app_id).await?;
        let release = self.release_tx(&mut tx, release_id).await?;
        if release.app_id != app_id {
            return Err(StoreError::NotFound(format!(
                "release {release_id} not found in app {}",
                app.name
            )));
        }
        app.release = Some(release_id);
        app.updated_at = slipway_types::Timestamp::now();
        sqlx::query("UPDATE apps SET release_id = $1, updated_at = $2 WHERE id = $3")
            .bind(release_id.to_string())
            .bind(app.updated_at.to_string())
            .bind(app_id.to_string())
            .execute(&mut **tx)
            .await?;
        self.commit_with_event(
            tx,
            Some(app_id),
            ObjectType::AppRelease,
            &app_id.to_string(),
            EventOp::Update,
            &release,
        )
        .await?;
        Ok(app)
    }
}
