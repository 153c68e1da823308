//! Artifacts, releases (both immutable) and formations.

use super::rows::{id, json, opt_text, text, time, to_json};
use super::{SqlStore, WriteTx, now, one};
use crate::{Result, StoreError};
use slipway_types::{
    Artifact, ArtifactType, EventOp, Formation, FormationUpdate, Id, NewArtifact, NewRelease,
    ObjectType, Release, Timestamp,
};
use sqlx::any::AnyRow;

fn artifact_from_row(row: &AnyRow) -> Result<Artifact> {
    let kind = match text(row, "type")?.as_str() {
        "slug" => ArtifactType::Slug,
        "image" => ArtifactType::Image,
        other => {
            return Err(StoreError::Database(format!(
                "unknown artifact type {other:?}"
            )));
        }
    };
    Ok(Artifact {
        id: id(row, "id")?,
        kind,
        uri: text(row, "uri")?,
        manifest: opt_text(row, "manifest")?
            .map(|m| serde_json::from_str(&m).map_err(|e| StoreError::Database(e.to_string())))
            .transpose()?,
        meta: json(row, "meta")?,
        size: super::rows::opt_int(row, "size")?.map(|s| s as u64),
        digest: opt_text(row, "digest")?,
        created_at: time(row, "created_at")?,
    })
}

const RELEASE_COLUMNS: &str = "id, app_id, env, meta, processes, created_at";

fn release_from_row(row: &AnyRow, artifacts: Vec<Id>) -> Result<Release> {
    Ok(Release {
        id: id(row, "id")?,
        app_id: id(row, "app_id")?,
        artifacts,
        env: json(row, "env")?,
        meta: json(row, "meta")?,
        processes: json(row, "processes")?,
        created_at: time(row, "created_at")?,
    })
}

fn formation_from_row(row: &AnyRow) -> Result<Formation> {
    Ok(Formation {
        app_id: id(row, "app_id")?,
        release_id: id(row, "release_id")?,
        processes: json(row, "processes")?,
        tags: json(row, "tags")?,
        created_at: time(row, "created_at")?,
        updated_at: time(row, "updated_at")?,
    })
}

impl SqlStore {
    pub async fn create_artifact(&self, new: &NewArtifact) -> Result<Artifact> {
        new.validate()?;
        let artifact = Artifact {
            id: Id::new_v4(),
            kind: new.kind,
            uri: new.uri.clone(),
            manifest: new.manifest.clone(),
            meta: new.meta.clone(),
            size: new.size,
            digest: new.digest.clone(),
            created_at: Timestamp::now(),
        };
        let mut tx = self.begin().await?;
        sqlx::query(
            "INSERT INTO artifacts (id, type, uri, manifest, meta, size, digest, created_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
        )
        .bind(artifact.id.to_string())
        .bind(artifact.kind.as_str())
        .bind(artifact.uri.clone())
        .bind(artifact.manifest.as_ref().map(to_json))
        .bind(to_json(&artifact.meta))
        .bind(artifact.size.map(|s| s as i64))
        .bind(artifact.digest.clone())
        .bind(artifact.created_at.to_string())
        .execute(&mut **tx)
        .await?;
        self.commit_with_event(
            tx,
            None,
            ObjectType::Artifact,
            &artifact.id.to_string(),
            EventOp::Create,
            &artifact,
        )
        .await?;
        Ok(artifact)
    }

    pub async fn get_artifact(&self, artifact_id: Id) -> Result<Artifact> {
        let row = sqlx::query("SELECT * FROM artifacts WHERE id = $1")
            .bind(artifact_id.to_string())
            .fetch_optional(self.pool())
            .await?;
        artifact_from_row(&one(row, "artifact", artifact_id)?)
    }

    pub async fn list_artifacts(&self) -> Result<Vec<Artifact>> {
        let rows = sqlx::query("SELECT * FROM artifacts ORDER BY created_at, id")
            .fetch_all(self.pool())
            .await?;
        rows.iter().map(artifact_from_row).collect()
    }

    pub async fn delete_artifact(&self, artifact_id: Id) -> Result<()> {
        let mut tx = self.begin().await?;
        let row = sqlx::query("SELECT * FROM artifacts WHERE id = $1")
            .bind(artifact_id.to_string())
            .fetch_optional(&mut **tx)
            .await?;
        let artifact = artifact_from_row(&one(row, "artifact", artifact_id)?)?;
        let users: Vec<String> = sqlx::query_scalar(
            "SELECT DISTINCT release_id FROM release_artifacts WHERE artifact_id = $1 ORDER BY release_id",
        )
        .bind(artifact_id.to_string())
        .fetch_all(&mut **tx)
        .await?;
        if let Some(first) = users.first() {
            let more = match users.len() {
                1 => String::new(),
                n => format!(" and {} other(s)", n - 1),
            };
            return Err(StoreError::Conflict(format!(
                "artifact {artifact_id} is used by release {first}{more}; delete the release(s) first"
            )));
        }
        sqlx::query("DELETE FROM artifacts WHERE id = $1")
            .bind(artifact_id.to_string())
            .execute(&mut **tx)
            .await?;
        self.commit_with_event(
            tx,
            None,
            ObjectType::Artifact,
            &artifact_id.to_string(),
            EventOp::Delete,
            &artifact,
        )
        .await
    }

    pub async fn create_release(&self, app_id: Id, new: &NewRelease) -> Result<Release> {
        new.validate()?;
        let mut tx = self.begin().await?;
        self.get_app_tx(&mut tx, app_id).await?;
        for artifact in &new.artifacts {
            let exists: Option<String> =
                sqlx::query_scalar("SELECT id FROM artifacts WHERE id = $1")
                    .bind(artifact.to_string())
                    .fetch_optional(&mut **tx)
                    .await?;
            if exists.is_none() {
                return Err(StoreError::Invalid(slipway_types::ValidationError::new(
                    "artifacts",
                    format!("artifact {artifact} does not exist"),
                )));
            }
        }
        let release = Release {
            id: Id::new_v4(),
            app_id,
            artifacts: new.artifacts.clone(),
            env: new.env.clone(),
            meta: new.meta.clone(),
            processes: new.processes.clone(),
            created_at: Timestamp::now(),
        };
        sqlx::query(
            "INSERT INTO releases (id, app_id, env, meta, processes, created_at) VALUES ($1, $2, $3, $4, $5, $6)",
        )
        .bind(release.id.to_string())
        .bind(app_id.to_string())
        .bind(to_json(&release.env))
        .bind(to_json(&release.meta))
        .bind(to_json(&release.processes))
        .bind(release.created_at.to_string())
        .execute(&mut **tx)
        .await?;
        for (position, artifact) in release.artifacts.iter().enumerate() {
            sqlx::query("INSERT INTO release_artifacts (release_id, artifact_id, position) VALUES ($1, $2, $3)")
                .bind(release.id.to_string())
                .bind(artifact.to_string())
                .bind(position as i64)
                .execute(&mut **tx)
                .await?;
        }
        self.commit_with_event(
            tx,
            Some(app_id),
            ObjectType::Release,
            &release.id.to_string(),
            EventOp::Create,
            &release,
        )
        .await?;
        Ok(release)
    }

    async fn release_artifacts(
        &self,
        conn: &mut sqlx::AnyConnection,
        release_id: &str,
    ) -> Result<Vec<Id>> {
        let ids: Vec<String> = sqlx::query_scalar(
            "SELECT artifact_id FROM release_artifacts WHERE release_id = $1 ORDER BY position",
        )
        .bind(release_id.to_string())
        .fetch_all(conn)
        .await?;
        ids.iter()
            .map(|s| {
                s.parse()
                    .map_err(|e| StoreError::Database(format!("corrupt artifact id: {e}")))
            })
            .collect()
    }

    pub(crate) async fn release_tx(&self, tx: &mut WriteTx, release_id: Id) -> Result<Release> {
        let row = sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT {RELEASE_COLUMNS} FROM releases WHERE id = $1"
        )))
        .bind(release_id.to_string())
        .fetch_optional(&mut ***tx)
        .await?;
        let row = one(row, "release", release_id)?;
        let artifacts = self
            .release_artifacts(&mut tx.tx, &release_id.to_string())
            .await?;
        release_from_row(&row, artifacts)
    }

    pub async fn get_release(&self, release_id: Id) -> Result<Release> {
        let mut conn = self.pool().acquire().await?;
        let row = sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT {RELEASE_COLUMNS} FROM releases WHERE id = $1"
        )))
        .bind(release_id.to_string())
        .fetch_optional(&mut *conn)
        .await?;
        let row = one(row, "release", release_id)?;
        let artifacts = self
            .release_artifacts(&mut conn, &release_id.to_string())
            .await?;
        release_from_row(&row, artifacts)
    }

    pub async fn list_releases(&self, app_id: Id) -> Result<Vec<Release>> {
        let mut conn = self.pool().acquire().await?;
        let rows = sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT {RELEASE_COLUMNS} FROM releases WHERE app_id = $1 ORDER BY created_at DESC, id DESC"
        )))
        .bind(app_id.to_string())
        .fetch_all(&mut *conn)
        .await?;
        let mut releases = Vec::with_capacity(rows.len());
        for row in &rows {
            let artifacts = self.release_artifacts(&mut conn, &text(row, "id")?).await?;
            releases.push(release_from_row(row, artifacts)?);
        }
        Ok(releases)
    }

    pub async fn delete_release(&self, app_id: Id, release_id: Id) -> Result<()> {
        self.delete_release_and(app_id, release_id, false)
            .await
            .map(drop)
    }

    /// [`SqlStore::delete_release`] and, in the same transaction, the slug artifacts the release
    /// named that no other release names; how many. In one transaction so a kill between the
    /// two cannot leave a slug no release names (nothing would ever delete it, and the blob GC
    /// would keep its blob).
    pub async fn delete_release_with_slugs(&self, app_id: Id, release_id: Id) -> Result<u64> {
        self.delete_release_and(app_id, release_id, true).await
    }

    async fn delete_release_and(&self, app_id: Id, release_id: Id, slugs: bool) -> Result<u64> {
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
                "release {release_id} is the current release of {}; it cannot be deleted: \
                 deploy another release first (slipway release rollback)",
                app.name
            )));
        }
        let unfinished: i64 = sqlx::query_scalar(
            "SELECT COUNT(*) FROM deployments WHERE new_release_id = $1 AND finished_at IS NULL",
        )
        .bind(release_id.to_string())
        .fetch_one(&mut **tx)
        .await?;
        if unfinished > 0 {
            return Err(StoreError::Conflict(format!(
                "release {release_id} is being deployed; it cannot be deleted"
            )));
        }
        // Formations of the release go with it (ON DELETE CASCADE).
        sqlx::query("DELETE FROM releases WHERE id = $1")
            .bind(release_id.to_string())
            .execute(&mut **tx)
            .await?;
        self.append_event(
            &mut tx,
            Some(app_id),
            ObjectType::Release,
            &release_id.to_string(),
            EventOp::Delete,
            &release,
        )
        .await?;
        let mut deleted = 0;
        if slugs {
            for artifact_id in &release.artifacts {
                // Its links went with the release (ON DELETE CASCADE): any left are another
                // release's.
                let row = sqlx::query(
                    "SELECT * FROM artifacts WHERE id = $1 AND type = $2 \
                     AND NOT EXISTS (SELECT 1 FROM release_artifacts WHERE artifact_id = $1)",
                )
                .bind(artifact_id.to_string())
                .bind(ArtifactType::Slug.as_str())
                .fetch_optional(&mut **tx)
                .await?;
                let Some(row) = row else { continue };
                let artifact = artifact_from_row(&row)?;
                sqlx::query("DELETE FROM artifacts WHERE id = $1")
                    .bind(artifact_id.to_string())
                    .execute(&mut **tx)
                    .await?;
                self.append_event(
                    &mut tx,
                    None,
                    ObjectType::Artifact,
                    &artifact_id.to_string(),
                    EventOp::Delete,
                    &artifact,
                )
                .await?;
                deleted += 1;
            }
        }
        self.commit(tx).await?;
        Ok(deleted)
    }

    pub async fn put_formation(
        &self,
        app_id: Id,
        release_id: Id,
        update: &FormationUpdate,
    ) -> Result<Formation> {
        let mut tx = self.begin().await?;
        let app = self.get_app_tx(&mut tx, app_id).await?;
        let release = self.release_tx(&mut tx, release_id).await?;
        if release.app_id != app_id {
            return Err(StoreError::NotFound(format!(
                "release {release_id} not found in app {}",
                app.name
            )));
        }
        let types: Vec<&str> = release.processes.keys().map(String::as_str).collect();
        update.validate(&types)?;
        let ts = now();
        let existing =
            sqlx::query("SELECT * FROM formations WHERE app_id = $1 AND release_id = $2")
                .bind(app_id.to_string())
                .bind(release_id.to_string())
                .fetch_optional(&mut **tx)
                .await?;
        let (created_at, op) = match &existing {
            Some(row) => (text(row, "created_at")?, EventOp::Update),
            None => (ts.clone(), EventOp::Create),
        };
        sqlx::query(
            "INSERT INTO formations (app_id, release_id, processes, tags, created_at, updated_at) VALUES ($1, $2, $3, $4, $5, $6) \
             ON CONFLICT (app_id, release_id) DO UPDATE SET processes = excluded.processes, tags = excluded.tags, updated_at = excluded.updated_at",
        )
        .bind(app_id.to_string())
        .bind(release_id.to_string())
        .bind(to_json(&update.processes))
        .bind(to_json(&update.tags))
        .bind(created_at.clone())
        .bind(ts.clone())
        .execute(&mut **tx)
        .await?;
        let formation = Formation {
            app_id,
            release_id,
            processes: update.processes.clone(),
            tags: update.tags.clone(),
            created_at: Timestamp::parse(&created_at)
                .map_err(|e| StoreError::Database(e.to_string()))?,
            updated_at: Timestamp::parse(&ts).expect("own format"),
        };
        let object_id = format!("{app_id}:{release_id}");
        self.commit_with_event(
            tx,
            Some(app_id),
            ObjectType::Formation,
            &object_id,
            op,
            &formation,
        )
        .await?;
        Ok(formation)
    }

    pub async fn get_formation(&self, app_id: Id, release_id: Id) -> Result<Formation> {
        let row = sqlx::query("SELECT * FROM formations WHERE app_id = $1 AND release_id = $2")
            .bind(app_id.to_string())
            .bind(release_id.to_string())
            .fetch_optional(self.pool())
            .await?;
        formation_from_row(&one(row, "formation for release", release_id)?)
    }

    pub(crate) async fn formation_tx(
        &self,
        tx: &mut WriteTx,
        app_id: Id,
        release_id: Id,
    ) -> Result<Option<Formation>> {
        let row = sqlx::query("SELECT * FROM formations WHERE app_id = $1 AND release_id = $2")
            .bind(app_id.to_string())
            .bind(release_id.to_string())
            .fetch_optional(&mut ***tx)
            .await?;
        row.as_ref().map(formation_from_row).transpose()
    }

    pub async fn list_formations(&self, app_id: Id) -> Result<Vec<Formation>> {
        let rows = sqlx::query("SELECT * FROM formations WHERE app_id = $1 ORDER BY created_at")
            .bind(app_id.to_string())
            .fetch_all(self.pool())
            .await?;
        rows.iter().map(formation_from_row).collect()
    }
}
