//! HTTP and TCP routes.

use super::rows::{flag, id, int, opt_text, text, time};
use super::{SqlStore, WriteTx, one, unique_violation};
use crate::{Result, StoreError};
use slipway_types::{
    Certificate, EventOp, HttpRoute, Id, NewRoute, ObjectType, Route, RouteType, RouteUpdate,
    TCP_PORT_RANGE, TcpRoute, Timestamp,
};
use sqlx::any::AnyRow;

/// The message Flynn's users know (`conflict: Duplicate route`).
const DUPLICATE: &str = "Duplicate route";

fn http_from_row(row: &AnyRow) -> Result<HttpRoute> {
    let certificate = match (opt_text(row, "tls_cert")?, opt_text(row, "tls_key")?) {
        (Some(cert), Some(key)) => Some(Certificate { cert, key }),
        _ => None,
    };
    Ok(HttpRoute {
        id: id(row, "id")?,
        app_id: id(row, "app_id")?,
        service: text(row, "service")?,
        domain: text(row, "domain")?,
        path: text(row, "path")?,
        sticky: flag(row, "sticky")?,
        leader: flag(row, "leader")?,
        certificate,
        created_at: time(row, "created_at")?,
        updated_at: time(row, "updated_at")?,
    })
}

fn tcp_from_row(row: &AnyRow) -> Result<TcpRoute> {
    Ok(TcpRoute {
        id: id(row, "id")?,
        app_id: id(row, "app_id")?,
        service: text(row, "service")?,
        port: u16::try_from(int(row, "port")?).map_err(|e| StoreError::Database(e.to_string()))?,
        leader: flag(row, "leader")?,
        created_at: time(row, "created_at")?,
        updated_at: time(row, "updated_at")?,
        listener: None,
    })
}

impl SqlStore {
    /// Inserts a normalised route in `tx`; a missing service becomes `<app>-web`.
    pub(crate) async fn insert_route(
        &self,
        tx: &mut WriteTx,
        app_id: Id,
        route: &NewRoute,
    ) -> Result<Route> {
        let app = self.get_app_tx(tx, app_id).await?;
        let now = Timestamp::now();
        let default_service = || format!("{}-web", app.name);
        let route = match route {
            NewRoute::Http {
                domain,
                path,
                service,
                sticky,
                leader,
                certificate,
            } => {
                let r = HttpRoute {
                    id: Id::new_v4(),
                    app_id,
                    service: service.clone().unwrap_or_else(default_service),
                    domain: domain.clone(),
                    path: path.clone().unwrap_or_else(|| "/".into()),
                    sticky: *sticky,
                    leader: *leader,
                    certificate: certificate.clone(),
                    created_at: now,
                    updated_at: now,
                };
                sqlx::query(
                    "INSERT INTO http_routes (id, app_id, service, domain, path, sticky, leader, tls_cert, tls_key, created_at, updated_at) \
                     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $10)",
                )
                .bind(r.id.to_string())
                .bind(app_id.to_string())
                .bind(r.service.clone())
                .bind(r.domain.clone())
                .bind(r.path.clone())
                .bind(i64::from(r.sticky))
                .bind(i64::from(r.leader))
                .bind(r.certificate.as_ref().map(|c| c.cert.clone()))
                .bind(r.certificate.as_ref().map(|c| c.key.clone()))
                .bind(now.to_string())
                .execute(&mut ***tx)
                .await
                .map_err(unique_violation(DUPLICATE))?;
                Route::Http(r)
            }
            NewRoute::Tcp {
                port,
                service,
                leader,
            } => {
                let port = match *port {
                    0 => self.free_tcp_port(tx).await?,
                    p => p,
                };
                let r = TcpRoute {
                    id: Id::new_v4(),
                    app_id,
                    service: service.clone().unwrap_or_else(default_service),
                    port,
                    leader: *leader,
                    created_at: now,
                    updated_at: now,
                    listener: None,
                };
                sqlx::query(
                    "INSERT INTO tcp_routes (id, app_id, service, port, leader, created_at, updated_at) VALUES ($1, $2, $3, $4, $5, $6, $6)",
                )
                .bind(r.id.to_string())
                .bind(app_id.to_string())
                .bind(r.service.clone())
                .bind(i64::from(r.port))
                .bind(i64::from(r.leader))
                .bind(now.to_string())
                .execute(&mut ***tx)
                .await
                .map_err(unique_violation(DUPLICATE))?;
                Route::Tcp(r)
            }
        };
        self.append_event(
            tx,
            Some(app_id),
            ObjectType::Route,
            &route.id().to_string(),
            EventOp::Create,
            &route,
        )
        .await?;
        Ok(route)
    }

    async fn free_tcp_port(&self, tx: &mut WriteTx) -> Result<u16> {
        let used: Vec<i64> =
            sqlx::query_scalar("SELECT port FROM tcp_routes WHERE port >= $1 AND port <= $2")
                .bind(i64::from(*TCP_PORT_RANGE.start()))
                .bind(i64::from(*TCP_PORT_RANGE.end()))
                .fetch_all(&mut ***tx)
                .await?;
        TCP_PORT_RANGE
            .clone()
            .find(|p| !used.contains(&i64::from(*p)))
            .ok_or_else(|| {
                StoreError::Conflict(format!(
                    "no free TCP port left in {}-{}; remove a TCP route or give a port with -p",
                    TCP_PORT_RANGE.start(),
                    TCP_PORT_RANGE.end()
                ))
            })
    }

    pub async fn create_route(&self, app_id: Id, route: &NewRoute) -> Result<Route> {
        let mut route = route.clone();
        route.normalize()?;
        let mut tx = self.begin().await?;
        let route = self.insert_route(&mut tx, app_id, &route).await?;
        self.commit(tx).await?;
        Ok(route)
    }

    async fn route_in(
        &self,
        conn: &mut sqlx::AnyConnection,
        app_id: Id,
        kind: RouteType,
        route_id: Id,
    ) -> Result<Route> {
        let label = format!("{}/{route_id}", kind.as_str());
        let sql = match kind {
            RouteType::Http => "SELECT * FROM http_routes WHERE app_id = $1 AND id = $2",
            RouteType::Tcp => "SELECT * FROM tcp_routes WHERE app_id = $1 AND id = $2",
        };
        let row = sqlx::query(sql)
            .bind(app_id.to_string())
            .bind(route_id.to_string())
            .fetch_optional(conn)
            .await?;
        let row = one(row, "route", label)?;
        Ok(match kind {
            RouteType::Http => Route::Http(http_from_row(&row)?),
            RouteType::Tcp => Route::Tcp(tcp_from_row(&row)?),
        })
    }

    pub async fn get_route(&self, app_id: Id, kind: RouteType, route_id: Id) -> Result<Route> {
        let mut conn = self.pool().acquire().await?;
        self.route_in(&mut conn, app_id, kind, route_id).await
    }

    async fn routes_in(
        &self,
        conn: &mut sqlx::AnyConnection,
        app_id: Option<Id>,
    ) -> Result<Vec<Route>> {
        let (http, tcp) = match app_id {
            Some(_) => (
                "SELECT * FROM http_routes WHERE app_id = $1 ORDER BY domain, path",
                "SELECT * FROM tcp_routes WHERE app_id = $1 ORDER BY port",
            ),
            None => (
                "SELECT * FROM http_routes WHERE $1 IS NULL OR app_id = $1 ORDER BY domain, path",
                "SELECT * FROM tcp_routes WHERE $1 IS NULL OR app_id = $1 ORDER BY port",
            ),
        };
        let key = app_id.map(|a| a.to_string());
        let mut routes = Vec::new();
        for row in sqlx::query(http)
            .bind(key.clone())
            .fetch_all(&mut *conn)
            .await?
        {
            routes.push(Route::Http(http_from_row(&row)?));
        }
        for row in sqlx::query(tcp).bind(key).fetch_all(&mut *conn).await? {
            routes.push(Route::Tcp(tcp_from_row(&row)?));
        }
        Ok(routes)
    }

    pub(crate) async fn routes_tx(
        &self,
        tx: &mut WriteTx,
        app_id: Option<Id>,
    ) -> Result<Vec<Route>> {
        self.routes_in(&mut tx.tx, app_id).await
    }

    pub async fn list_routes(&self, app_id: Option<Id>) -> Result<Vec<Route>> {
        let mut conn = self.pool().acquire().await?;
        self.routes_in(&mut conn, app_id).await
    }

    pub async fn update_route(
        &self,
        app_id: Id,
        kind: RouteType,
        route_id: Id,
        update: &RouteUpdate,
    ) -> Result<Route> {
        update.validate()?;
        let mut tx = self.begin().await?;
        let mut route = self.route_in(&mut tx.tx, app_id, kind, route_id).await?;
        let now = Timestamp::now();
        match &mut route {
            Route::Http(r) => {
                if let Some(s) = &update.service {
                    r.service = s.clone();
                }
                r.sticky = update.sticky.unwrap_or(r.sticky);
                r.leader = update.leader.unwrap_or(r.leader);
                if update.remove_certificate {
                    r.certificate = None;
                }
                if let Some(c) = &update.certificate {
                    r.certificate = Some(c.clone());
                }
                r.updated_at = now;
                sqlx::query(
                    "UPDATE http_routes SET service = $1, sticky = $2, leader = $3, tls_cert = $4, tls_key = $5, updated_at = $6 WHERE id = $7",
                )
                .bind(r.service.clone())
                .bind(i64::from(r.sticky))
                .bind(i64::from(r.leader))
                .bind(r.certificate.as_ref().map(|c| c.cert.clone()))
                .bind(r.certificate.as_ref().map(|c| c.key.clone()))
                .bind(now.to_string())
                .bind(route_id.to_string())
                .execute(&mut **tx)
                .await?;
            }
            Route::Tcp(r) => {
                if update.sticky.is_some()
                    || update.certificate.is_some()
                    || update.remove_certificate
                {
                    return Err(StoreError::Invalid(slipway_types::ValidationError::new(
                        "route",
                        "TCP routes have no sticky sessions or certificates",
                    )));
                }
                if let Some(s) = &update.service {
                    r.service = s.clone();
                }
                r.leader = update.leader.unwrap_or(r.leader);
                r.updated_at = now;
                sqlx::query("UPDATE tcp_routes SET service = $1, leader = $2, updated_at = $3 WHERE id = $4")
                    .bind(r.service.clone())
                    .bind(i64::from(r.leader))
                    .bind(now.to_string())
                    .bind(route_id.to_string())
                    .execute(&mut **tx)
                    .await?;
            }
        }
        self.commit_with_event(
            tx,
            Some(app_id),
            ObjectType::Route,
            &route_id.to_string(),
            EventOp::Update,
            &route,
        )
        .await?;
        Ok(route)
    }

    pub async fn delete_route(&self, app_id: Id, kind: RouteType, route_id: Id) -> Result<()> {
        let mut tx = self.begin().await?;
        let route = self.route_in(&mut tx.tx, app_id, kind, route_id).await?;
        let sql = match kind {
            RouteType::Http => "DELETE FROM http_routes WHERE id = $1",
            RouteType::Tcp => "DELETE FROM tcp_routes WHERE id = $1",
        };
        sqlx::query(sql)
            .bind(route_id.to_string())
            .execute(&mut **tx)
            .await?;
        self.commit_with_event(
            tx,
            Some(app_id),
            ObjectType::Route,
            &route_id.to_string(),
            EventOp::Delete,
            &route,
        )
        .await
    }
}
